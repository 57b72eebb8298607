"""Zoo models over sequences: text, speech, time series."""

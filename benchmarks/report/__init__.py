"""The report: summary (answers first), markdown, html with plots, per-layer profiles, int8 causes."""

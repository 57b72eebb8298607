"""Zoo models over images: classifiers, detection, generation."""

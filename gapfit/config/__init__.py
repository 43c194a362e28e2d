"""The fit's configuration, validated: gap pieces parsed against their descriptors, species
expansion, and ``gapfit --help``."""

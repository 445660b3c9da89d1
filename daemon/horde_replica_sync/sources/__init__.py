"""Where replica data comes from: the PRIMARY API and, as a fallback, GitHub raw files."""

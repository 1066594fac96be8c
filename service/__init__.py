"""A production prediction server for scikit-learn models."""

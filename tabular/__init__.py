"""Tabular landslide classifier: LightGBM on per-region features, explained with SHAP."""

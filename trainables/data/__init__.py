"""Data layer: dataset layouts, label schemes, preprocessing, the prepared cache, sampling."""

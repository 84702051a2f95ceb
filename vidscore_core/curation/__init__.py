"""Dataset-level products: near-duplicate groups, filters, filtered datasets."""

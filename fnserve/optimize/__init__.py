"""Making a published version faster: variants of its model, and precomputed answers."""

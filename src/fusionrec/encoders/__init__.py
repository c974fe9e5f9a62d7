"""Encoders, one per modality, behind one small interface; the embedding cache; the embedding pipeline."""

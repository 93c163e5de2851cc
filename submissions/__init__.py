"""Stage 08 (the Kaggle submission file), its validator and the opt-in Kaggle upload (stage 09)."""

"""The trained model: its arrays and id maps, the ranker, scoring, popularity and the model file."""

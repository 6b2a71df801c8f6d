"""What a trained model says about itself: model_meta.json and the shared preprocessing."""

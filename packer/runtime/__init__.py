"""Running bundles natively: seeded noise and the generation pipeline."""

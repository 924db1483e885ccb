"""Small helpers shared by every stage: progress, canonical JSON, hashing."""

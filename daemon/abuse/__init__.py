"""The embedded engine's lexicon and the matching that a profanity model cannot do."""

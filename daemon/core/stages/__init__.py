"""The pipeline's moderation stages: messages from the intake to decisions, in batches
(:mod:`.moderation`), and the stage for a streaming primary engine (:mod:`.streaming`)."""

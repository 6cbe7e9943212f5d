"""Moderation state that outlives one message: strikes, exemptions, the review queue, and the
audit log of every change an operator makes to them."""

"""The moderation policy: verdict -> action per channel (:mod:`chatmod.policy.rules`),
escalation ladders over strikes (:mod:`chatmod.policy.ladder`, pure) and the stage that counts
strikes in a store before the sinks (:mod:`chatmod.policy.escalation`).

Nothing is imported here, so that :mod:`chatmod.config.sections` can import the ladder's
parser without importing the policy that imports the sections."""

"""What the daemon does with a control request (``chatmod exempt``, ``chatmod channel``):
change the store, write the audit log, and apply the change to this daemon at once (the
others of a Redis group read it within ``[state] refresh`` seconds)."""

from __future__ import annotations

from typing import Any

from chatmod.policy.escalation import Escalation
from chatmod.state.audit import AuditEntry, AuditLog
from chatmod.state.control import ControlRequest
from chatmod.state.live import Exemption


class LiveControl:
    """Answers control requests for one daemon."""

    def __init__(self, escalation: Escalation, audit: AuditLog) -> None:
        self.escalation = escalation
        self.audit = audit

    async def handle(self, request: ControlRequest) -> dict[str, Any]:
        """Make the change (audited before it is reported as made); the reply's fields."""
        store, now = self.escalation.store, self.escalation.clock()
        if request.op == "exempt.list":
            found = [e.as_record() for e in await store.exemptions(now)
                     if request.author in ("", e.author)]
            return {"exemptions": found}
        if request.op == "channel.list":
            switches = await store.channel_switches()
            return {"channels": {name: values for name, values in sorted(switches.items())
                                 if values and request.channel in ("", name)}}
        reply: dict[str, Any]
        detail: dict[str, Any] = {"channel": request.channel or None}
        if request.op == "exempt.add":
            until = None if request.duration is None else now + request.duration
            exemption = Exemption(request.author, request.channel, until, request.why,
                                  request.by)
            await store.put_exemption(exemption)
            reply = {"exemption": exemption.as_record()}
            detail.update(author=request.author, until=until)
        elif request.op == "exempt.remove":
            removed = await store.remove_exemption(request.author, request.channel)
            reply = {"removed": removed}
            detail.update(author=request.author, removed=removed)
        else:  # channel.set
            switches = await store.set_switches(request.channel, request.switches)
            reply = {"channel": request.channel, "switches": switches}
            detail.update(switches=dict(request.switches))
        reply["audit"] = self.audit.record(AuditEntry(
            who=request.by, what=request.op, why=request.why, detail=detail))
        await self.escalation.reload_rules()
        return reply

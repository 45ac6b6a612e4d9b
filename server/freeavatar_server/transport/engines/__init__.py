"""Zero-plugin engine outputs: rig frames pushed over UDP as Unreal Live Link Face packets
(livelink) or VMC protocol OSC messages (vmc), one task per output (manager)."""

from freeavatar_server.transport.engines.livelink import NoArkitControls
from freeavatar_server.transport.engines.manager import (
    BadOutput,
    EngineOutput,
    OutputManager,
    OutputNotFound,
    TooManyOutputs,
)
from freeavatar_server.transport.engines.vmc import NoArkitForVmc

__all__ = [
    "BadOutput",
    "EngineOutput",
    "NoArkitControls",
    "NoArkitForVmc",
    "OutputManager",
    "OutputNotFound",
    "TooManyOutputs",
]

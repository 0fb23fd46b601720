"""Many hosts as one: wire format, ring all-reduce, engine-node daemon, driver API."""
from .allreduce import PlanMismatch, agree, allreduce, pack, unpack
from .driver import Cluster, ClusterError, FitResult, NonFiniteGradients
from . import hostpool
from .optimizer import HostOptimizer
from .reference import ReferenceMLP, ReferenceProgram, reference_fit
from .ring import PeerLost, RingLinks
from .wire import Message, WireError, decode, encode

__all__ = ["Cluster", "ClusterError", "FitResult", "NonFiniteGradients", "HostOptimizer", "ReferenceMLP", "ReferenceProgram", "reference_fit",
           "Message", "WireError", "decode", "encode", "RingLinks", "PeerLost", "PlanMismatch",
           "agree", "allreduce", "pack", "unpack"]

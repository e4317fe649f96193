"""The engine: the node API, workflow validation, the output cache and the executor.

This package imports neither torch nor anything from HTTP; node packs build on the names exported here.
"""
from .cache import NullCache, OutputCache
from .executor import Executor, RunResult
from .folders import Folders, UnsafePath, resolve_inside
from .node import ExecutionBlocked, Interrupted, Node, NodeContext, NodeResult
from .registry import NodeRegistry, default_registry
from .runtime import Runtime
from .spec import MAX_RESOLUTION, MAX_SEED, Boolean, Combo, Float, Input, Int, Output, String
from .validate import ValidationResult, format_validation, validate_prompt
from .workflow import Link, Workflow

__all__ = [
    "Boolean", "Combo", "ExecutionBlocked", "Executor", "Float", "Folders", "Input", "Int", "Interrupted", "Link",
    "MAX_RESOLUTION", "MAX_SEED", "Node", "NodeContext", "NodeRegistry", "NodeResult", "NullCache", "Output",
    "OutputCache", "RunResult", "Runtime", "String", "UnsafePath", "ValidationResult", "Workflow", "default_registry",
    "format_validation", "resolve_inside", "validate_prompt",
]

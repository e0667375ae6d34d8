"""The process boundary of graded runs: a student's code runs in a confined child, the verdict in the parent.

`python -m minidit.course.grading grade` runs each exercise's tests (this checkout's exercises/test_exNN_*.py,
with the same oracles and hints as `pytest exercises`) in a clean pytest process loaded with this
module as a plugin (`-p minidit.course.sandbox`). There, `course.load(ex, "student")` - what the `impl`
fixture and `course.use("student", ...)` call - returns a *remote module*: every call on it is carried
out by a child process that imported a private copy of the student's file, and nothing the student
wrote is ever imported by the parent.

What crosses the boundary (files in the child's folder, never pickle):
- tensors and numpy arrays: one safetensors file per message (dtype, shape, `requires_grad`);
  plain values (None, bool, int, float, str, tuples, lists, dicts with str keys, dtypes): JSON;
- torch.Generator: its state, copied back after the call (a draw advances the caller's generator);
- tensors, arrays and modules made only of torch.nn layers are copied in and, after the call, their
  new values are copied back in place (update_ema changes the EMA in place; a tensor or parameter
  the student replaced rather than updated is replaced in the parent too, and a parameter left
  inside the autograd graph keeps a grad_fn, so the tests see what they would in one process);
- any other object of the parent (a minidit DiT, a test's fake model) stays in the parent: the child
  gets a handle that it can call (or call `.forward` on) and whose plain attributes it can read;
- an nn.Module the child builds (the block exercises) stays in the child behind a handle; the
  parent gets a *shadow*: the same tree of submodules with real parameters and buffers (torch.nn
  layers as themselves, the student's classes as stand-ins with the same name and plain class
  attributes). Tests initialise, load and inspect the shadow like any module; its forward (and any
  other public method the student's class adds) sends the current parameters and buffers to the
  child, runs the student's code there, and copies back the output and what the call changed;
- gradients: a tensor argument that requires grad gets its gradient through the child (backward
  asks the child for the vector-Jacobian product). Gradients w.r.t. a shadow's parameters do not
  flow back (no exercise test needs them).

The child (Linux): its own session; RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_FSIZE (output and files),
RLIMIT_NPROC (processes), no core files; started by root it drops to an unprivileged user (default
`nobody`), or, when that user cannot run the installed Python, stays root with every capability
dropped (RLIMIT_NPROC does not bind root: a watchdog counts its processes instead); with Landlock
(Linux >= 5.13) it may write only in its own folder, read only the
Python installation, the minidit package and its folder (not the instructor's tests or solutions/),
open no TCP connection, and (Linux >= 6.12) signal no process outside it. The parent is a child
subreaper, so processes the student starts (double-forked, setsid, closed fds) stay its descendants
and are killed with the whole tree when a call times out, when the child dies, and before the report
is written. Waiting uses deadlines on doorbell pipes and reads replies from files: a descendant that
holds a pipe open cannot stall the grader.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import pathlib
import re
import select
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
import types
from typing import Any

ENV_SUBMISSION = "MINIDIT_SANDBOX_SUBMISSION"  # the student's folder (graded mode; each child gets a copy)
ENV_BUDGET = "MINIDIT_SANDBOX_BUDGET"  # seconds all tests of one exercise may take together
ENV_REPORT = "MINIDIT_SANDBOX_REPORT"  # where the verdict process writes its JSON report
ENV_LIMITS = "MINIDIT_SANDBOX_LIMITS"  # JSON of Limits
CRASH_MESSAGE = "your code's process ended"  # a test failed because the child died (status "crashed")
NOT_OWN_MESSAGE = "is not your own code"  # the runtime honesty check (status "rejected")
TIMEOUT_MESSAGE = "test ran longer than"  # also what exercises/conftest.py says on a per-test timeout
BUDGET_MESSAGE = "this exercise's tests ran longer than"  # --timeout, for all tests of an exercise together
MARKER = "minidit-sandbox-"  # prefix of every child's folder (and so of its command line)


@dataclasses.dataclass
class Limits:
    """Per-child limits. Wall time per call is `call_seconds`; the others are rlimits of the child."""

    call_seconds: float = 60.0  # one call into the student's code (also the per-test alarm's job)
    memory_mb: int = 2048  # RLIMIT_AS: address space (torch itself takes about 0.7 GB)
    cpu_seconds: int = 600  # RLIMIT_CPU over the child's life
    output_mb: int = 16  # RLIMIT_FSIZE: the largest file (stdout, stderr, any file) it may write
    max_processes: int = 32  # RLIMIT_NPROC above what the child's user already runs (threads count)
    user: str = "nobody"  # when the grader is root, the child runs as this user ("" keeps root)
    landlock: bool = True  # confine the file system, TCP and signals where the kernel supports it

    @classmethod
    def from_env(cls) -> Limits:
        raw = os.environ.get(ENV_LIMITS, "")
        return cls(**json.loads(raw)) if raw else cls()


# ----------------------------------------------------------------------------- process tree (Linux)

_PR_SET_CHILD_SUBREAPER, _PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 36, 4, 38


def _prctl(option: int, arg: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) == 0


def become_subreaper() -> bool:
    """Orphaned descendants (setsid, double fork) are re-parented to this process, not to init."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _parents() -> dict[int, int]:
    """pid -> parent pid for every process (Linux /proc; empty elsewhere), zombies included."""
    parent_of = {}
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else []:
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()  # after "(command name)": state, ppid, ...
            if len(fields) > 1:
                parent_of[int(entry.name)] = int(fields[1])
    return parent_of


def children(pid: int | None = None) -> list[int]:
    """The direct children of a process."""
    pid = os.getpid() if pid is None else pid
    return [p for p, parent in _parents().items() if parent == pid]


def descendants(pid: int | None = None) -> set[int]:
    """Every process below `pid`, from one pass over the process table."""
    parent_of = _parents()
    found, frontier = set(), {os.getpid() if pid is None else pid}
    while frontier:
        frontier = {p for p, parent in parent_of.items() if parent in frontier and p not in found}
        found |= frontier
    return found


def kill_descendants(keep: set[int] | frozenset = frozenset(), seconds: float = 10.0) -> bool:
    """SIGKILL every descendant except `keep` (and theirs), reaping them; True when none is left.

    As a subreaper this sees processes that setsid and double-forked: each killed child's orphans
    become our children and are found on the next pass.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kids = [p for p in children() if p not in keep]
        if not kids:
            return True
        for pid in kids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in kids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return not [p for p in children() if p not in keep]


# ----------------------------------------------------------------------------- landlock (Linux)

_LL_FS = {
    name: 1 << i
    for i, name in enumerate(
        [
            "execute",
            "write_file",
            "read_file",
            "read_dir",
            "remove_dir",
            "remove_file",
            "make_char",
            "make_dir",
            "make_reg",
            "make_sock",
            "make_fifo",
            "make_block",
            "make_sym",
            "refer",
            "truncate",
            "ioctl_dev",
        ]
    )
}
_LL_FS_BY_ABI = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}  # how many of the rights above each ABI knows


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: not available)."""
    if not sys.platform.startswith("linux"):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    version = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # LANDLOCK_CREATE_RULESET_VERSION
    return max(int(version), 0)


def _landlock(read_dirs: list[str], write_dirs: list[str], read_write_files: list[str]) -> int:
    """Confine this process (and its future children) to these paths; returns the ABI used (0: none)."""
    abi = landlock_abi()
    if abi <= 0:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    fs_all = (1 << _LL_FS_BY_ABI.get(abi, 16)) - 1
    read = _LL_FS["execute"] | _LL_FS["read_file"] | _LL_FS["read_dir"]
    file_rights = (
        _LL_FS["execute"] | _LL_FS["write_file"] | _LL_FS["read_file"] | (_LL_FS["truncate"] if abi >= 3 else 0)
    )

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    attr = RulesetAttr(fs_all, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)  # TCP bind+connect; signals+abstract sockets
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(444, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return 0
    try:
        rules = (
            [(p, read) for p in read_dirs]
            + [(p, fs_all) for p in write_dirs]
            + [(p, file_rights) for p in read_write_files]
        )
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if not os.path.isdir(path):
                    rights &= file_rights
                rule = PathBeneath(rights, fd)
                libc.syscall(445, ruleset, 1, ctypes.byref(rule), ctypes.c_uint32(0))  # PATH_BENEATH
            finally:
                os.close(fd)
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        if libc.syscall(446, ruleset, ctypes.c_uint32(0)) != 0:
            return 0
        return abi
    finally:
        os.close(ruleset)


# ----------------------------------------------------------------------------- the wire format

_PLAIN = (type(None), bool, int, float, str)


def _is_plain(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (tuple, list)) and depth < 4:
        return all(_is_plain(v, depth + 1) for v in value)
    return False


def _module_internals() -> frozenset:
    from torch import nn

    return frozenset(vars(nn.Module()))


def _torch_only(module) -> bool:
    """A module tree built only from torch.nn classes, with no hooks: it can travel by value."""
    for m in module.modules():
        if not type(m).__module__.startswith("torch.nn."):
            return False
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks:
            return False
    return True


def _import_torch_nn_class(path: str):

    module_name, _, qualname = path.partition(":")
    if not module_name.startswith("torch.nn.") or "." in qualname:
        raise TypeError(f"refusing to build a module of class {path}")
    cls = getattr(importlib.import_module(module_name), qualname)
    from torch import nn

    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"{path} is not an nn.Module class")
    return cls


class _Encoder:
    """Turns a Python value into JSON plus a dict of tensors (for one safetensors file)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint, self.tensors = endpoint, {}

    def tensor(self, t) -> str:
        key = f"t{len(self.tensors)}"
        self.tensors[key] = t.detach().cpu().contiguous().clone()
        return key

    def __call__(self, value: Any) -> Any:
        import numpy as np
        import torch
        from torch import nn

        if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"float": repr(value)}  # JSON has no nan or inf
        if isinstance(value, torch.Tensor):
            if value.is_sparse:
                raise TypeError("sparse tensors cannot cross the grading boundary")
            return {"tensor": self.tensor(value), "rg": bool(value.requires_grad)}
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise TypeError("numpy object arrays cannot cross the grading boundary")
            return {"ndarray": self.tensor(torch.from_numpy(np.ascontiguousarray(value)))}
        if isinstance(value, np.generic):
            return {"npscalar": [str(value.dtype), value.item()]}
        if isinstance(value, torch.dtype):
            return {"dtype": str(value).removeprefix("torch.")}
        if isinstance(value, torch.device):
            return {"device": str(value)}
        if isinstance(value, torch.Size):
            return {"size": list(value)}
        if isinstance(value, torch.Generator):
            return {"generator": self.tensor(value.get_state()), "on": str(value.device)}
        if isinstance(value, tuple):
            return {"tuple": [self(v) for v in value]}
        if isinstance(value, list):
            return {"list": [self(v) for v in value]}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {"dict": {k: self(v) for k, v in value.items()}}
        if isinstance(value, nn.Module) and self.endpoint.is_child:
            return {"shadow": self.endpoint.export_module(value, self)}
        if isinstance(value, nn.Module) and _torch_only(value):
            return {"module": self.module(value)}
        if isinstance(value, RemoteObject) and value._sb_endpoint is self.endpoint:
            return {"handle": value._sb_id, "gen": value._sb_gen}
        return {"ref": self.endpoint.export(value)}

    def module(self, module, shadow: bool = False) -> list[dict]:
        """The module's tree, pre-order: class, plain attributes, parameters, buffers, training flag."""
        internals = _module_internals()
        nodes = []
        for path, m in module.named_modules(remove_duplicate=False):
            cls = type(m)
            node = {
                "path": path,
                "training": bool(m.training),
                "attrs": {k: self(v) for k, v in vars(m).items() if k not in internals and _is_plain(v)},
                "params": {
                    k: None if p is None else {**self(p), "history": p.grad_fn is not None}
                    for k, p in m._parameters.items()
                },
                "buffers": {k: None if b is None else self(b) for k, b in m._buffers.items()},
                "nonpersistent": sorted(m._non_persistent_buffers_set),
            }
            if cls.__module__.startswith("torch.nn.") and "." not in cls.__qualname__:
                node["cls"] = f"{cls.__module__}:{cls.__qualname__}"
            elif shadow:
                node["shadow_cls"] = cls.__qualname__
                node["class_attrs"] = _class_attrs(cls, self)
                node["methods"] = _class_methods(cls)
            else:
                raise TypeError(f"module class {cls.__qualname__} cannot be copied")
            nodes.append(node)
        return nodes


def _class_attrs(cls, encode) -> dict:
    """Plain class attributes of a student's class and its non-torch bases (e.g. cond_kind = "vector")."""
    out = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.startswith(("torch", "builtins")):
            continue
        for k, v in vars(klass).items():
            if not k.startswith("__") and _is_plain(v):
                out[k] = encode(v)
    return out


def _class_methods(cls) -> list[str]:
    """Public methods a student's module class adds to nn.Module (encode, decode, ...): the shadow forwards them."""
    from torch import nn

    module_names = set(dir(nn.Module))
    return sorted(
        {
            k
            for klass in cls.__mro__
            if not klass.__module__.startswith(("torch", "builtins"))
            for k, v in vars(klass).items()
            if callable(v) and not k.startswith("_") and k not in module_names
        }
    )


class _Decoder:
    def __init__(self, endpoint: Endpoint, tensors: dict, replace: dict | None = None) -> None:
        self.endpoint, self.tensors, self.replace = endpoint, tensors, replace or {}
        self.mutable: list[tuple[str, Any]] = []  # (path in the message, object) copied back after a call

    def __call__(self, value: Any, path: str = "") -> Any:
        import numpy as np
        import torch

        if not isinstance(value, dict):
            return value
        kind = next((k for k in _KINDS if k in value), None)
        body = value.get(kind)
        if kind == "float":
            return float(body)
        if kind == "tensor":
            t = self.replace.get(body, self.tensors[body])
            if value.get("rg") and t.is_floating_point() and body not in self.replace:
                t.requires_grad_(True)
            self.mutable.append((path, t))
            return t
        if kind == "ndarray":
            arr = self.tensors[body].numpy()
            self.mutable.append((path, arr))
            return arr
        if kind == "npscalar":
            return np.dtype(body[0]).type(body[1])
        if kind == "dtype":
            dtype = getattr(torch, str(body), None)
            if not isinstance(dtype, torch.dtype):  # never any other attribute of torch (torch.save, say)
                raise ValueError(f"{body!r} is not a torch dtype")
            return dtype
        if kind == "device":
            return torch.device(body)
        if kind == "size":
            return torch.Size(body)
        if kind == "generator":
            g = torch.Generator(device=value.get("on", "cpu"))
            g.set_state(self.tensors[body])
            self.mutable.append((path, g))
            return g
        if kind == "tuple":
            return tuple(self(v, f"{path}.{i}") for i, v in enumerate(body))
        if kind == "list":
            return [self(v, f"{path}.{i}") for i, v in enumerate(body)]
        if kind == "dict":
            return {k: self(v, f"{path}.{k}") for k, v in body.items()}
        if kind == "module":
            module = _build_module(body, self)
            self.mutable.append((path, module))
            return module
        if kind == "shadow":
            return self.endpoint.import_shadow(body, self)
        if kind == "ref":
            return RemoteObject._make(self.endpoint, body, getattr(self.endpoint, "gen", 0))
        if kind == "handle":
            return self.endpoint.local(body)
        raise ValueError(f"unknown value kind {kind!r}")


_KINDS = (
    "float",
    "tensor",
    "ndarray",
    "npscalar",
    "dtype",
    "device",
    "size",
    "generator",
    "tuple",
    "list",
    "dict",
    "module",
    "shadow",
    "ref",
    "handle",
)


def _build_module(nodes: list[dict], decode: _Decoder, shadow_class=None):
    """Rebuild a module tree from _Encoder.module's description (torch.nn classes, or shadows)."""
    from torch import nn

    root = None
    for node in nodes:
        if "cls" in node:
            cls = _import_torch_nn_class(node["cls"])
        elif shadow_class is not None:
            cls = shadow_class(
                node["shadow_cls"],
                {k: decode(v) for k, v in node.get("class_attrs", {}).items()},
                methods=node.get("methods", []),
            )
        else:
            raise TypeError("only torch.nn modules can be copied into the child")
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        for k, v in node["attrs"].items():
            m.__dict__[k] = decode(v)
        m.training = bool(node["training"])
        for k, v in node["params"].items():
            if v is not None and v.get("history"):  # updated through autograd earlier: a non-leaf, as in the parent
                m._parameters[k] = nn.Parameter(decode.tensors[v["tensor"]].clone(), requires_grad=False)
                _give_history(m._parameters[k], decode.tensors[v["tensor"]])
            else:
                m._parameters[k] = (
                    None if v is None else nn.Parameter(decode.tensors[v["tensor"]], requires_grad=bool(v.get("rg")))
                )
        for k, v in node["buffers"].items():
            m._buffers[k] = None if v is None else decode.tensors[v["tensor"]]
        m._non_persistent_buffers_set.update(node.get("nonpersistent", []))
        if node["path"] == "":
            root = m
        else:
            parent_path, _, name = node["path"].rpartition(".")
            root.get_submodule(parent_path)._modules[name] = m
        if not isinstance(root, nn.Module):
            raise ValueError("a module description must start with its root")
    return root


def _give_history(tensor, value) -> None:
    """Set a tensor (that does not require grad) to `value` through autograd, so it gets a grad_fn."""
    import torch

    with torch.enable_grad():
        tensor.mul_(0).add_(value.detach().clone().requires_grad_(True))


def _module_state(module) -> dict:
    """(path, name) -> tensor for every parameter and buffer of a module tree."""
    state = {}
    for path, m in module.named_modules(remove_duplicate=False):
        for kind, table in (("p", m._parameters), ("b", m._buffers)):
            for name, t in table.items():
                if t is not None:
                    state[f"{kind}:{path}:{name}"] = t
    return state


def _locate(module, key: str):
    kind, path, name = key.split(":", 2)
    owner = module.get_submodule(path)
    return owner, (owner._parameters if kind == "p" else owner._buffers), name


def _atomic_bytes(folder: pathlib.Path, name: str, data: bytes) -> None:
    """Write folder/name through a fresh O_EXCL temp file (never through a link someone planted) and rename."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".w-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_nofollow(path: pathlib.Path, limit: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path.name} is larger than {limit} bytes")
    return data


# ----------------------------------------------------------------------------- both ends of the wire


class ChildDied(RuntimeError):
    pass


class Endpoint:
    """One side of the conversation: numbered message files in an outbox, a doorbell byte per message.

    Messages are (kind, body); a request is answered by "return" or "raise", and while waiting for that
    answer a side serves the other's nested requests (a callback from the student's code into a model of
    the test, say), so calls nest in both directions.
    """

    is_child = False

    def __init__(self, outbox: pathlib.Path, inbox: pathlib.Path, bell_out: int, bell_in: int, limit_bytes: int):
        self.outbox, self.inbox, self.bell_out, self.bell_in = outbox, inbox, bell_out, bell_in
        self.limit_bytes = limit_bytes
        self.sent = self.received = 0
        self.objects: dict[int, Any] = {}  # our objects the peer holds handles to

    # --- objects
    def export(self, obj: Any) -> int:
        key = id(obj)
        self.objects[key] = obj
        return key

    def local(self, key: int) -> Any:
        if key not in self.objects:
            raise RuntimeError("this object no longer exists in the submission's process")
        return self.objects[key]

    def export_module(self, module, encode):  # pragma: no cover - the child overrides
        raise TypeError("modules travel by value from the parent")

    def import_shadow(self, body, decode):  # pragma: no cover - the parent overrides
        raise TypeError("unexpected module from the parent")

    # --- messages
    def send(self, kind: str, body: Any, tensors: dict | None = None) -> None:
        from safetensors.torch import save

        self.sent += 1
        name = f"m{self.sent:07d}"
        if tensors:
            _atomic_bytes(self.outbox, name + ".st", save(tensors))
        _atomic_bytes(
            self.outbox, name + ".json", json.dumps({"kind": kind, "body": body, "tensors": bool(tensors)}).encode()
        )
        os.write(self.bell_out, b"!")

    def _ready(self) -> pathlib.Path | None:
        path = self.inbox / f"m{self.received + 1:07d}.json"
        return path if path.exists() else None

    def wait_ready(self) -> None:
        """Block until the peer's next message file exists (each side has its own deadlines)."""
        raise NotImplementedError

    def receive(self) -> tuple[str, Any, dict]:
        from safetensors.torch import load

        self.wait_ready()
        self.received += 1
        name = f"m{self.received:07d}"
        message = json.loads(_read_nofollow(self.inbox / (name + ".json"), self.limit_bytes))
        tensors = load(_read_nofollow(self.inbox / (name + ".st"), self.limit_bytes)) if message["tensors"] else {}
        for suffix in (".json", ".st"):
            with contextlib.suppress(OSError):
                os.unlink(self.inbox / (name + suffix))
        return message["kind"], message["body"], tensors

    def request(self, kind: str, body_fn) -> tuple[Any, dict]:
        """Send a request (body_fn(encoder) builds the body) and serve nested requests until it is answered."""
        enc = _Encoder(self)
        self.send(kind, body_fn(enc), enc.tensors)
        while True:
            kind, body, tensors = self.receive()
            if kind == "return":
                return body, tensors
            if kind == "raise":
                raise _rebuild_exception(body)
            self.serve(kind, body, tensors)

    def serve(self, kind: str, body: Any, tensors: dict) -> None:
        try:
            enc = _Encoder(self)
            reply = self.handle(kind, body, tensors, enc)
        except BaseException as err:  # noqa: BLE001 - every error goes back to the caller
            if not self.is_child and isinstance(err, (KeyboardInterrupt, SystemExit, TimeoutError)):
                raise  # the parent's own interruptions (the per-test alarm) are not the child's business
            self.send("raise", _describe_exception(err))
            return
        self.send("return", reply, enc.tensors)

    def handle(self, kind: str, body: Any, tensors: dict, enc: _Encoder) -> Any:
        decode = _Decoder(self, tensors)
        if kind in ("call", "getattr") and not (isinstance(body.get("target"), dict) and "handle" in body["target"]):
            raise ValueError("a call or attribute read must name an object the other side handed over")
        if kind == "call":
            target = decode(body["target"])
            self.check_call(target, body.get("attr"))
            fn = getattr(target, body["attr"]) if body.get("attr") else target
            return {"value": enc(fn(*decode(body["args"]), **decode(body["kwargs"])))}
        if kind == "getattr":
            target = decode(body["target"])
            value = self.get_attribute(target, body["name"])
            return {"value": enc(value)}
        raise ValueError(f"unknown request {kind!r}")

    def check_call(self, target: Any, attr: str | None) -> None:
        """What the peer may call on our objects (the parent restricts it: see Submission.check_call)."""

    def get_attribute(self, target: Any, name: str) -> Any:
        return getattr(target, name)


def _describe_exception(err: BaseException) -> dict:
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.endswith("sandbox.py")]
    tb = traceback.format_list(frames) + traceback.format_exception_only(type(err), err)
    return {"type": type(err).__name__, "message": str(err), "traceback": "".join(tb)[-4000:]}


def _rebuild_exception(info: dict) -> BaseException:

    cls = getattr(builtins, info.get("type", ""), None)
    message = str(info.get("message", ""))
    if not (isinstance(cls, type) and issubclass(cls, Exception)) or cls is StopIteration:
        cls, message = RuntimeError, f"{info.get('type')}: {message}"
    try:
        err = cls(message)
    except Exception:  # an exception class with another signature
        err = RuntimeError(f"{info.get('type')}: {message}")
    err._sb_remote = True  # raised by the student's code, not by the boundary
    tail = "".join(str(info.get("traceback", "")).splitlines(keepends=True)[-12:])
    if tail:
        err.add_note("in the submission's process:\n" + tail)
    return err


class RemoteObject:
    """A handle to an object that lives on the other side: call it, call .forward, read plain attributes."""

    __slots__ = ("_sb_endpoint", "_sb_id", "_sb_gen", "__weakref__")

    @classmethod
    def _make(cls, endpoint: Endpoint, key: int, gen: int) -> RemoteObject:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_sb_endpoint", endpoint)
        object.__setattr__(obj, "_sb_id", key)
        object.__setattr__(obj, "_sb_gen", gen)
        return obj

    def _target(self) -> dict:
        return {"handle": self._sb_id, "gen": self._sb_gen}

    def __call__(self, *args, **kwargs):
        return self._sb_endpoint.call(self, None, args, kwargs)

    def forward(self, *args, **kwargs):
        return self._sb_endpoint.call(self, "forward", args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._sb_endpoint.getattr(self, name)

    def __repr__(self) -> str:
        return f"<object of the other process #{self._sb_id}>"


# ----------------------------------------------------------------------------- the child


class _ChildEndpoint(Endpoint):
    is_child = True

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.module: types.ModuleType | None = None
        self.graphs: dict[int, tuple[list, list]] = {}
        self.calls = 0
        self.parent = os.getppid()

    def wait_ready(self) -> None:
        while self._ready() is None:
            select.select([self.bell_in], [], [], 5.0)
            with contextlib.suppress(BlockingIOError, InterruptedError):
                os.read(self.bell_in, 4096)
            if os.getppid() != self.parent:  # the parent is gone
                os._exit(0)

    def call(self, target: RemoteObject, attr, args, kwargs):
        body, tensors = self.request(
            "call", lambda enc: {"target": target._target(), "attr": attr, "args": enc(args), "kwargs": enc(kwargs)}
        )
        return _Decoder(self, tensors)(body["value"])

    def getattr(self, target: RemoteObject, name: str):
        body, tensors = self.request("getattr", lambda enc: {"target": target._target(), "name": name})
        return _Decoder(self, tensors)(body["value"])

    def export_module(self, module, enc: _Encoder) -> dict:
        return {"handle": self.export(module), "nodes": enc.module(module, shadow=True)}

    def handle(self, kind: str, body: Any, tensors: dict, enc: _Encoder) -> Any:
        import torch

        if kind == "load":
            return self.load(body)
        if kind == "invoke":  # the parent calls a name of the submission, or one of our handles
            decode = _Decoder(self, tensors)
            target = getattr(self.module, body["name"]) if "name" in body else decode(body["target"])
            args, kwargs = decode(body["args"], "a"), decode(body["kwargs"], "k")
            before = [(p, o, _snapshot(o)) for p, o in decode.mutable]
            leaves = [o for _, o in decode.mutable if isinstance(o, torch.Tensor) and o.requires_grad]
            value = target(*args, **kwargs)
            encoded = enc(value)
            reply = {"value": encoded, "mutations": _mutations(before, enc)}
            outs = [(k, t) for k, t in _walk_tensors(value, encoded) if t.requires_grad and t.grad_fn is not None]
            if leaves and outs:
                self.calls += 1
                self.graphs[self.calls] = (leaves, [t for _, t in outs])
                for old in [c for c in self.graphs if c <= self.calls - 32]:
                    del self.graphs[old]
                reply["grad"] = {"call": self.calls, "outputs": [k for k, _ in outs]}
            return reply
        if kind == "forward":  # a shadow module's forward: load its state, run, return output and buffers
            decode = _Decoder(self, tensors)
            module = self.local(body["handle"]).get_submodule(body["path"])
            with torch.no_grad():
                for key, value in body["state"].items():
                    owner, table, name = _locate(module, key)
                    new = decode(value)
                    if table.get(name) is not None and table[name].shape == new.shape:
                        table[name].copy_(new)
                    else:
                        table[name] = torch.nn.Parameter(new) if key.startswith("p:") else new
            for path, flag in body["training"].items():
                module.get_submodule(path).training = bool(flag)
            before = {k: t.detach().clone() for k, t in _module_state(module).items()}
            args, kwargs = decode(body["args"]), decode(body["kwargs"])
            value = getattr(module, body["method"])(*args, **kwargs) if body.get("method") else module(*args, **kwargs)
            changed = {
                k: enc(t)
                for k, t in _module_state(module).items()  # BatchNorm statistics, say
                if k not in before or before[k].shape != t.shape or not torch.equal(before[k], t.detach())
            }
            return {"value": enc(value), "changed": changed}
        if kind == "backward":
            decode = _Decoder(self, tensors)
            leaves, outs = self.graphs[body["call"]]
            grads = torch.autograd.grad(outs, leaves, decode(body["grads"]), allow_unused=True, retain_graph=True)
            return {"grads": enc(list(grads))}
        return super().handle(kind, body, tensors, enc)

    def load(self, body: dict) -> dict:

        path = pathlib.Path(body["file"])
        name = "submission_" + path.stem
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        self.module = module
        described = {}
        for attr in body["names"]:
            if not hasattr(module, attr):
                continue
            obj = getattr(module, attr)
            own = getattr(obj, "__module__", None) == name
            info: dict[str, Any] = {
                "own": own,
                "origin": f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}",
            }
            if isinstance(obj, type):
                import torch

                info["kind"] = "module_class" if issubclass(obj, torch.nn.Module) else "class"
                info["class_attrs"] = _class_attrs(obj, _Encoder(self))
                info["methods"] = _class_methods(obj) if info["kind"] == "module_class" else []
            else:
                info["kind"] = "function" if callable(obj) else "value"
            described[attr] = info
        return {"names": described}


def _snapshot(obj):
    import numpy as np
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, torch.Generator):
        return obj.get_state().clone()
    if isinstance(obj, torch.nn.Module):
        return {k: (t, id(t), t.detach().clone()) for k, t in _module_state(obj).items()}
    return None


def _mutations(before, enc: _Encoder) -> dict:
    """What the call changed in the arguments that travelled by value (copied back by the parent)."""
    import numpy as np
    import torch

    changed = {}
    for path, obj, old in before:
        if isinstance(obj, torch.Tensor):
            if not torch.equal(obj.detach(), old):
                changed[path] = {"tensor": enc.tensor(obj), "grad_fn": obj.grad_fn is not None}
        elif isinstance(obj, np.ndarray):
            if not np.array_equal(obj, old):
                changed[path] = {"ndarray": enc.tensor(torch.from_numpy(np.ascontiguousarray(obj)))}
        elif isinstance(obj, torch.Generator):
            if not torch.equal(obj.get_state(), old):
                changed[path] = {"generator": enc.tensor(obj.get_state())}
        elif isinstance(obj, torch.nn.Module):
            now = _module_state(obj)
            entries = {}
            for key, t in now.items():
                was = old.get(key)
                same = was is not None and was[1] == id(t)
                entries[key] = {
                    "t": enc.tensor(t),
                    "same": same,
                    "grad_fn": t.grad_fn is not None,
                    "rg": bool(t.requires_grad),
                }
            changed[path] = {"module": entries}
    return changed


def _walk_tensors(value, encoded):
    """(tensor key in the message, tensor) for each tensor of a returned value."""
    import torch

    if isinstance(value, torch.Tensor) and isinstance(encoded, dict) and "tensor" in encoded:
        yield encoded["tensor"], value
    elif isinstance(value, (tuple, list)) and isinstance(encoded, dict):
        for v, e in zip(value, next(iter(encoded.values()))):
            yield from _walk_tensors(v, e)
    elif isinstance(value, dict) and isinstance(encoded, dict) and "dict" in encoded:
        for k, v in value.items():
            yield from _walk_tensors(v, encoded["dict"][k])


def _limit(config: dict) -> list[str]:
    """rlimits, and an unprivileged user when started by root: applied before any of the student's code runs."""
    import resource  # Unix only (the child's limits and user)

    notes = []
    limits = Limits(**config["limits"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_mb << 20,) * 2)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit raises OSError (EFBIG) in the student's code
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb << 20,) * 2)
    if os.getuid() == 0 and config.get("user"):
        import pwd  # Unix only (the child's limits and user)

        entry = pwd.getpwnam(config["user"])
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
        notes.append(f"runs as user {config['user']}")
    elif os.getuid() == 0:
        _drop_capabilities()  # root without capabilities: cannot raise these limits again
        notes.append("runs as root without capabilities (the process limit is the parent's watchdog)")
    if os.getuid() != 0:  # root ignores RLIMIT_NPROC; the limit counts every task (thread) of the user
        tasks = _tasks_of_user(os.getuid())
        resource.setrlimit(resource.RLIMIT_NPROC, (tasks + limits.max_processes,) * 2)
        notes.append(f"at most {limits.max_processes} more processes")
    return notes


def _drop_capabilities() -> None:
    """Empty the bounding, effective, permitted and inheritable capability sets of this process."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP; fails harmlessly past the last capability

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    data = (Data * 2)()
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed: the child would keep root's capabilities")


def _usable_by_others(path: str) -> bool:
    """True when a user other than the owner can reach (and read) this path: every folder above is o+x."""
    real = pathlib.Path(os.path.realpath(path))
    for folder in [*reversed(real.parents), real]:
        mode = os.stat(folder).st_mode
        if folder.is_dir() and not mode & 0o001 or not folder.is_dir() and not mode & 0o004:
            return False
    return True


def _tasks_of_user(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry.name}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
    return count


def child_main(workdir: str) -> None:
    """Entry point of the child (see Submission.start): limits, libraries, Landlock, tripwires, then serve."""
    config = json.loads(pathlib.Path(workdir, "config.json").read_text())
    notes = _limit(config)
    import numpy  # noqa: F401 - the libraries are imported before the file system is closed
    import safetensors.torch  # noqa: F401
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(ImportError):
        import einops  # noqa: F401
    from minidit import blocks, diffusion, embeddings, model  # noqa: F401 - what the exercises build on

    if config["limits"]["landlock"]:
        abi = _landlock(config["read_dirs"], [workdir], ["/dev/null"])
        notes.append(f"landlock ABI {abi}" if abi else "landlock unavailable")
    _tripwires(config["exercise"])
    endpoint = _ChildEndpoint(
        pathlib.Path(workdir, "to_parent"),
        pathlib.Path(workdir, "to_child"),
        config["bell_out"],
        config["bell_in"],
        config["limit_bytes"],
    )
    endpoint.send("ready", {"notes": notes})
    while True:
        kind, body, tensors = endpoint.receive()
        endpoint.serve(kind, body, tensors)


def _tripwires(exercise_id: str) -> None:
    """In the child, minidit's own versions of the graded exercise raise when called, also from inside minidit
    (GaussianDiffusion calling compute_alphas_cumprod, say): a submission cannot pass by calling them."""
    from minidit import course

    ex = course.get(exercise_id)
    for name, targets in ex.targets.items():
        message = (
            f"{ex.id}: your code called minidit's own {name}, which {NOT_OWN_MESSAGE}; an exercise "
            "scores only your own implementation"
        )
        for target in targets:
            try:
                container, key, kind = course._resolve(target)
                obj = container[key] if kind == "item" else getattr(container, key)
            except Exception:  # noqa: BLE001 - a target that does not resolve has nothing to guard
                continue
            trap = _trap(message)
            if isinstance(obj, type):  # a class: every method of it raises
                for attr, value in list(vars(obj).items()):
                    if isinstance(value, types.FunctionType):
                        setattr(obj, attr, trap)
                if "__init__" not in vars(obj):
                    obj.__init__ = trap
                continue
            if isinstance(obj, types.FunctionType) and not obj.__code__.co_freevars:
                obj.__code__ = trap.__code__  # every reference to the function (imports by name too) now raises
            course._set(container, key, kind, trap)


def _trap(message: str) -> types.FunctionType:
    code = compile(f"def trap(*args, **kwargs):\n    raise RuntimeError({message!r})\n", "<grading>", "exec")
    return types.FunctionType(code.co_consts[0], {"__builtins__": __builtins__})


# ----------------------------------------------------------------------------- the parent

_FN_CACHE: list = []


def _remote_grad_function():
    """A torch.autograd.Function whose backward asks the child for the vector-Jacobian product."""
    if not _FN_CACHE:
        import torch

        class RemoteGrad(torch.autograd.Function):
            @staticmethod
            def forward(ctx, info, *leaves):
                ctx.info = info
                return tuple(o.detach().clone() for o in info[3])

            @staticmethod
            def backward(ctx, *grads):
                submission, call_id, gen, _ = ctx.info
                return (None, *submission.backward(call_id, gen, grads))

        _FN_CACHE.append(RemoteGrad)
    return _FN_CACHE[0]


class Submission(Endpoint):
    """The parent's side of one exercise's child process: start, call, restart after a crash, kill."""

    def __init__(self, exercise_id: str, folder: pathlib.Path, limits: Limits):
        self.exercise_id, self.folder, self.limits = exercise_id, pathlib.Path(folder), limits
        self.proc = self.workdir = None
        self.gen = 0  # incarnation of the child: handles of a dead child are refused
        self.shadow_classes: dict[str, type] = {}
        self.names: dict | None = None
        self.notes: list[str] = []

    # --- life cycle
    def start(self) -> None:
        """Start a fresh child on a private copy of the submission and wait until it is ready.

        The per-test alarm (exercises/conftest.py) is paused meanwhile: starting a process after a
        timeout or a crash is not the next test's time (importing the student's file is).
        """
        alarm = signal.setitimer(signal.ITIMER_REAL, 0) if _main_thread() else (0.0, 0.0)
        try:
            self._start()
        finally:
            if alarm[0] > 0:
                signal.setitimer(signal.ITIMER_REAL, *alarm)

    def _start(self) -> None:

        from minidit import course

        self.close()
        self.gen += 1
        self.shadow_classes, self.names = {}, None
        work = pathlib.Path(tempfile.mkdtemp(prefix=MARKER))
        for sub in ("submission", "site", "tmp", "to_parent", "to_child"):
            (work / sub).mkdir()
        for path in sorted(self.folder.glob("*.py")):  # the student's files; never their conftest or tests
            if path.name != "conftest.py" and not path.name.startswith("test_") and path.is_file():
                shutil.copyfile(path, work / "submission" / path.name)
        package = pathlib.Path(course.__file__).resolve().parents[1]
        (work / "site" / "minidit").symlink_to(package, target_is_directory=True)
        to_child, from_child = os.pipe(), os.pipe()
        user = (
            self.limits.user
            if os.getuid() == 0
            and self.limits.user
            and all(_usable_by_others(p) for p in (sys.executable, sys.base_prefix, sys.prefix, str(package)))
            else ""
        )
        config = {
            "exercise": self.exercise_id,
            "workdir": str(work),
            "limits": dataclasses.asdict(self.limits),
            "user": user,
            "bell_in": to_child[0],
            "bell_out": from_child[1],
            "limit_bytes": self.limits.output_mb << 20,
            "read_dirs": _readable_dirs(package),
            "parent": os.getpid(),
        }
        (work / "config.json").write_text(json.dumps(config))
        if user:
            import pwd  # Unix only (the child's limits and user)

            entry = pwd.getpwnam(user)
            for path in [work, *work.rglob("*")]:  # to_child stays the parent's: the child only reads it
                if "to_child" not in path.relative_to(work).parts:
                    os.lchown(path, entry.pw_uid, entry.pw_gid)
            os.chmod(work, 0o755)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work / "tmp"),
            "TMPDIR": str(work / "tmp"),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "MALLOC_ARENA_MAX": "2",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
        }
        boot = (
            "import sys; sys.path.insert(0, sys.argv[1] + '/site'); "
            "from minidit.course import sandbox; sandbox.child_main(sys.argv[1])"
        )
        self.stdout, self.stderr = open(work / "stdout.txt", "wb"), open(work / "stderr.txt", "wb")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-c", boot, str(work)],
                cwd=work / "submission",
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self.stdout,
                stderr=self.stderr,
                pass_fds=(to_child[0], from_child[1]),
                start_new_session=True,
            )
        finally:
            os.close(to_child[0])
            os.close(from_child[1])
        os.set_blocking(from_child[0], False)
        self.workdir = work
        Endpoint.__init__(
            self, work / "to_child", work / "to_parent", to_child[1], from_child[0], self.limits.output_mb << 20
        )
        kind, body, _ = self._receive(max(self.limits.call_seconds, 60.0))
        if kind != "ready":
            raise ChildDied(f"{CRASH_MESSAGE} while starting")
        self.notes = body.get("notes", [])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """Kill the child with everything it started (setsid descendants too) and remove its folder."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(Exception):
                self.proc.wait(5)
            kill_descendants(keep=_KEEP)
            for fd in (self.bell_out, self.bell_in):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.stdout.close()
            self.stderr.close()
            self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def output_tail(self, chars: int = 1500) -> str:
        """The end of what the child printed (stdout, then stderr)."""
        text = ""
        for name in ("stdout.txt", "stderr.txt"):
            with contextlib.suppress(OSError, ValueError, TypeError):
                text += _read_nofollow(self.workdir / name, self.limits.output_mb << 20).decode(errors="replace")[
                    -chars:
                ]
        return text[-chars:]

    # --- waiting: deadlines on a doorbell, replies in files (a descendant holding a pipe changes nothing)
    def wait_ready(self) -> None:
        deadline = time.monotonic() + self._wait_seconds
        while self._ready() is None:
            if not self.alive():
                raise ChildDied(self._death_message())
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{TIMEOUT_MESSAGE} {self._wait_seconds:g} s in one call (an infinite loop?)")
            self._check_processes()
            select.select([self.bell_in], [], [], min(left, 0.5))
            with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
                os.read(self.bell_in, 4096)

    _wait_seconds = 60.0

    def _check_processes(self) -> None:
        """The process limit for a root child (which RLIMIT_NPROC does not bind): checked while waiting and after
        each call."""
        if len(descendants() - _KEEP) > self.limits.max_processes + 1:  # + 1: the child itself
            raise ChildDied(f"{CRASH_MESSAGE} (it started more than {self.limits.max_processes} processes)")

    def _receive(self, seconds: float):
        self._wait_seconds = seconds
        try:
            return self.receive()
        finally:
            self._wait_seconds = self.limits.call_seconds

    def _death_message(self) -> str:
        code = self.proc.returncode if self.proc is not None else None
        why = {
            -signal.SIGXCPU: f"it used more than {self.limits.cpu_seconds} s of CPU",
            -signal.SIGKILL: "it was killed",
            -signal.SIGSEGV: "a segmentation fault",
        }.get(code, f"exit code {code}")
        tail = self.output_tail(800).strip()
        return f"{CRASH_MESSAGE} ({why})" + (f"; its last output:\n{tail}" if tail else "")

    def request(self, kind, body_fn):
        if not self.alive():
            self.start()
        self._wait_seconds = self.limits.call_seconds
        try:
            reply = super().request(kind, body_fn)
            self._check_processes()
            return reply
        except BaseException as err:
            if not getattr(err, "_sb_remote", False):
                self.close()  # stuck, dead or out of step: kill its tree; the next call starts a fresh child
            raise

    # --- what the parent lets the child do with the parent's objects
    def check_call(self, target: Any, attr: str | None) -> None:
        if attr not in (None, "forward"):
            raise AttributeError(f"the grader lets your code call this object or its forward, not .{attr}")
        if not callable(target):
            raise TypeError(f"a {type(target).__name__} is not callable")

    def get_attribute(self, target: Any, name: str) -> Any:
        import numpy as np
        import torch

        if name.startswith("_"):
            raise AttributeError(f"the grader does not let your code read {name!r}")
        value = getattr(target, name)
        if _is_plain(value) or isinstance(value, (torch.Tensor, np.ndarray, torch.dtype, torch.device, torch.Size)):
            return value
        raise AttributeError(
            f"the grader lets your code read plain attributes (numbers, strings, tensors) of this "
            f"object and call it; .{name} is a {type(value).__name__}"
        )

    # --- the remote module
    def module(self) -> types.SimpleNamespace:
        """The exercise's names, each run in the child: functions as _RemoteName, nn.Module classes as shadows."""
        from minidit import course

        ex = course.get(self.exercise_id)
        file = self.folder / f"{ex.stem}.py"
        if not file.is_file():
            raise FileNotFoundError(f"{ex.id}: no file {file.name} in the submission")
        if self.names is None or not self.alive():
            if not self.alive():
                self.start()
            body, _ = self.request(
                "load", lambda enc: {"file": str(self.workdir / "submission" / file.name), "names": list(ex.names)}
            )
            self.names = body["names"]
        namespace = types.SimpleNamespace(__name__=f"submission.{ex.stem}", __file__=str(file))
        decode = _Decoder(self, {})
        for name, info in self.names.items():
            if not info["own"]:
                raise AssertionError(
                    f"{ex.id}: {name} {NOT_OWN_MESSAGE}: it is {info['origin']}; an exercise "
                    "scores only your own implementation"
                )
            if info["kind"] == "module_class":
                attrs = {k: decode(v) for k, v in info["class_attrs"].items()}
                setattr(namespace, name, self.shadow_class(name, attrs, remote=name, methods=info["methods"]))
            else:
                setattr(namespace, name, _RemoteName(self, name))
        return namespace

    def shadow_class(
        self, qualname: str, class_attrs: dict, remote: str | None = None, methods: list[str] = ()
    ) -> type:
        """One stand-in class per class of the submission (so isinstance and class attributes work)."""
        if qualname not in self.shadow_classes:
            attrs = {
                **class_attrs,
                "__module__": "submission",
                "__qualname__": qualname,
                "_sb_remote": remote,
                "_sb_submission": self,
                **{m: _forwarding_method(m) for m in methods},
            }
            self.shadow_classes[qualname] = _ShadowMeta(qualname, (_shadow_base(),), attrs)
        elif remote is not None:
            self.shadow_classes[qualname]._sb_remote = remote
        return self.shadow_classes[qualname]

    def import_shadow(self, body: dict, decode: _Decoder):
        root = _build_module(body["nodes"], decode, shadow_class=self.shadow_class)
        for path, m in root.named_modules():
            if isinstance(m, _shadow_base()):
                m.__dict__["_sb"] = (body["handle"], self.gen, path)
        return root

    def _check_gen(self, gen: int, what: str) -> None:
        if gen != self.gen or not self.alive():
            raise RuntimeError(f"{CRASH_MESSAGE} earlier (a timeout or a crash), and this {what} died with it")

    # --- calls into the child
    def invoke(self, target: dict, args: tuple, kwargs: dict) -> Any:
        """Call a name of the submission (or a handle) in the child; copy back what it changed in the arguments."""
        leaves = _leaves((args, kwargs))
        reply, tensors = self.request("invoke", lambda enc: {**target, "args": enc(args), "kwargs": enc(kwargs)})
        replace = {}
        grad = reply.get("grad")
        if grad and leaves:
            outputs = [tensors[k] for k in grad["outputs"]]
            new = _remote_grad_function().apply((self, grad["call"], self.gen, outputs), *leaves)
            replace = dict(zip(grad["outputs"], new if isinstance(new, tuple) else (new,)))
        value = _Decoder(self, tensors, replace)(reply["value"])
        _apply_mutations((args, kwargs), reply.get("mutations", {}), tensors)
        return value

    def call(self, target: RemoteObject, attr, args, kwargs):
        self._check_gen(target._sb_gen, "object")
        handle = {"handle": target._sb_id, "gen": target._sb_gen}
        if attr is not None:
            raise AttributeError(f"calling .{attr} of an object of the submission is not supported")
        return self.invoke({"target": handle}, args, kwargs)

    def getattr(self, target: RemoteObject, name: str):
        self._check_gen(target._sb_gen, "object")
        body, tensors = self.request("getattr", lambda enc: {"target": {"handle": target._sb_id}, "name": name})
        return _Decoder(self, tensors)(body["value"])

    def forward(self, shadow, args, kwargs, method: str | None = None):
        """A shadow's forward (or another method): send its current parameters and buffers, run the student's
        code on them, copy back what the call changed in them."""
        import torch

        handle, gen, path = shadow.__dict__["_sb"]
        self._check_gen(gen, "module")
        state = _module_state(shadow)
        reply, tensors = self.request(
            "forward",
            lambda enc: {
                "handle": handle,
                "path": path,
                "state": {k: enc(t) for k, t in state.items()},
                "training": {p: m.training for p, m in shadow.named_modules()},
                "args": enc(args),
                "kwargs": enc(kwargs),
                "method": method,
            },
        )
        decode = _Decoder(self, tensors)
        with torch.no_grad():
            for key, value in reply.get("changed", {}).items():
                new = decode(value)
                if key in state and state[key].shape == new.shape and not torch.equal(state[key], new):
                    state[key].copy_(new)
        return decode(reply["value"])

    def backward(self, call_id: int, gen: int, grads) -> list:
        self._check_gen(gen, "computation graph")
        body, tensors = self.request("backward", lambda enc: {"call": call_id, "grads": enc(list(grads))})
        return list(_Decoder(self, tensors)(body["grads"]))


_KEEP: set[int] = set()  # children of the grading process that are not the sandbox's


def _main_thread() -> bool:

    return threading.current_thread() is threading.main_thread()


def _readable_dirs(package: pathlib.Path) -> list[str]:
    """What the child may read: the Python installation and libraries, system files, the minidit package -
    never the checkout around minidit (its exercises/ tests and solutions/)."""

    candidates = {
        "/usr",
        "/lib",
        "/lib64",
        "/lib32",
        "/bin",
        "/sbin",
        "/etc",
        "/proc",
        "/sys",
        "/dev",
        "/opt",
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        str(package),
    }
    candidates.update(
        v for k, v in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib")
    )
    candidates.update(site.getsitepackages())
    candidates.update(p for p in sys.path if p)
    repo = os.path.realpath(package.parent)
    # inside the checkout only the package and a virtual environment kept there (.venv) are readable:
    # pytest puts tests/ and exercises/ on sys.path, and they must stay closed
    inside_ok = [os.path.realpath(p) for p in (package, sys.prefix, sys.exec_prefix)]
    out = set()
    for path in candidates:
        real = os.path.realpath(path)
        in_repo = real == repo or real.startswith(repo + os.sep)
        if in_repo and not any(real == ok or real.startswith(ok + os.sep) for ok in inside_ok):
            continue
        if os.path.isdir(real) and real != "/" and not repo.startswith(real + os.sep):
            out.add(real)
    return sorted(out)


def _leaves(value) -> list:
    """Tensors of the arguments that require grad, in the order the child decodes them."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value] if value.requires_grad and value.is_floating_point() else []
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _leaves(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _leaves(v)]
    return []


def _at_path(args_kwargs: tuple, path: str):
    """The argument at a path written by the child's decoder: "a.0", "k.model_kwargs.y", ..."""
    head, *parts = path.split(".")
    obj = args_kwargs[0] if head == "a" else args_kwargs[1]
    for part in parts:
        obj = obj[part] if isinstance(obj, dict) else obj[int(part)]
    return obj


def _apply_mutations(args_kwargs: tuple, mutations: dict, tensors: dict) -> None:
    """Copy back into the caller's objects what the child's call changed in them (the same objects, in place)."""
    import numpy as np
    import torch
    from torch import nn

    for path, change in mutations.items():
        try:
            obj = _at_path(args_kwargs, path)
        except (KeyError, IndexError, ValueError, TypeError):
            continue
        if "tensor" in change and isinstance(obj, torch.Tensor):
            with torch.no_grad():
                obj.copy_(tensors[change["tensor"]])
        elif "ndarray" in change and isinstance(obj, np.ndarray):
            obj[...] = tensors[change["ndarray"]].numpy()
        elif "generator" in change and isinstance(obj, torch.Generator):
            obj.set_state(tensors[change["generator"]])
        elif "module" in change and isinstance(obj, nn.Module):
            for key, entry in change["module"].items():
                with contextlib.suppress(AttributeError, ValueError):
                    _mirror(obj, key, entry, tensors[entry["t"]])


def _mirror(module, key: str, entry: dict, new) -> None:
    """One parameter or buffer after the child's call: replaced, updated through autograd, or updated in place."""
    import torch
    from torch import nn

    owner, table, name = _locate(module, key)
    old = table.get(name)
    if old is None or not entry["same"] or old.shape != new.shape:
        # the student assigned a new tensor: so does the parent (the test then sees a different object)
        table[name] = nn.Parameter(new.clone(), requires_grad=entry["rg"]) if key.startswith("p:") else new.clone()
        return
    if entry["grad_fn"] and old.grad_fn is None and not old.requires_grad:
        _give_history(old, new)  # the update went through autograd (no torch.no_grad()): so does the parent's
        return
    with torch.no_grad():
        if not torch.equal(old.detach(), new):
            old.copy_(new)
    if old.is_leaf and old.requires_grad != entry["rg"]:
        old.requires_grad_(entry["rg"])


class _RemoteName:
    """A function (or other callable) of the submission; a call runs in the child."""

    def __init__(self, submission: Submission, name: str):
        self._submission, self.__name__, self.__qualname__ = submission, name, name

    def __call__(self, *args, **kwargs):
        sub = self._submission
        if not sub.alive() or sub.names is None:
            sub.module()  # a fresh child after a timeout or crash: import the submission again
        return sub.invoke({"name": self.__name__}, args, kwargs)

    def __repr__(self) -> str:
        return f"<{self.__name__} of the submission (runs in its own process)>"


def _forwarding_method(name: str):
    def method(self, *args, **kwargs):
        return type(self)._sb_submission.forward(self, args, kwargs, method=name)

    method.__name__ = method.__qualname__ = name
    return method


class _ShadowMeta(type):
    """Calling a shadow class builds the student's module in the child and returns its shadow."""

    def __call__(cls, *args, **kwargs):
        if not cls._sb_remote:
            raise TypeError(f"{cls.__qualname__} is built by the submission's code, not here")
        sub: Submission = cls._sb_submission
        if not sub.alive() or sub.names is None:
            sub.module()
        return sub.invoke({"name": cls._sb_remote}, args, kwargs)


_SHADOW_BASE: list = []


def _shadow_base() -> type:
    """The base class of shadows (built on first use: it needs torch)."""
    if not _SHADOW_BASE:
        from torch import nn

        class ShadowModule(nn.Module):
            """Stand-in for a module of the student's class: real parameters here, forward in the child."""

            _sb_submission: Submission

            def forward(self, *args, **kwargs):
                return type(self)._sb_submission.forward(self, args, kwargs)

            def extra_repr(self) -> str:
                return "shadow of the submission's module; forward runs in its process"

        _SHADOW_BASE.append(ShadowModule)
    return _SHADOW_BASE[0]


# ----------------------------------------------------------------------------- pytest plugin (graded mode)

_SUBMISSIONS: dict[str, Submission] = {}
_REPORT: dict[str, dict] = {}


def _submission(exercise_id: str) -> Submission:
    from minidit import course

    ex = course.get(exercise_id)
    if ex.id not in _SUBMISSIONS:
        _SUBMISSIONS[ex.id] = Submission(ex.id, pathlib.Path(os.environ[ENV_SUBMISSION]), Limits.from_env())
    return _SUBMISSIONS[ex.id]


def remote_module(exercise_id: str) -> types.SimpleNamespace:
    """What `course.load(exercise_id, "student")` returns in graded mode."""
    return _submission(exercise_id).module()


def close_all() -> None:
    """Kill every child and everything they started."""
    for sub in _SUBMISSIONS.values():
        sub.close()
    kill_descendants(keep=_KEEP)


def _exercise_id(nodeid: str) -> str:

    match = re.search(r"test_(ex\d\d)_", nodeid)
    return match.group(1) if match else ""


_SPENT: dict[str, float] = {}  # exercise -> seconds its tests took
_INFO: dict[str, dict] = {}  # exercise -> what its child printed, the protections that applied
_CURRENT: list[str] = []  # the exercise whose tests run now


def _finish(exercise_id: str) -> None:
    """An exercise's tests are done: keep what its child printed, then kill it with all it started."""
    sub = _SUBMISSIONS.get(exercise_id)
    if sub is not None:
        _INFO[exercise_id] = {"notes": sub.notes, "output": sub.output_tail()}
        sub.close()
    kill_descendants(keep=_KEEP)


def pytest_configure(config) -> None:
    if not os.environ.get(ENV_SUBMISSION):
        return
    from minidit import course

    become_subreaper()
    _prctl(_PR_SET_DUMPABLE, 0)  # processes of the same user cannot ptrace this one or open /proc/<pid>/fd
    _KEEP.update(children())
    course.set_remote_loader(remote_module)


try:
    from pytest import hookimpl as _hookimpl
except ImportError:  # pytest is only needed where this module is a plugin

    def _hookimpl(**kwargs):
        return lambda function: function


@_hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not os.environ.get(ENV_SUBMISSION):
        yield
        return
    exercise = _exercise_id(item.nodeid)
    if _CURRENT and _CURRENT[0] != exercise:  # the previous exercise's child dies before these tests run
        _finish(_CURRENT.pop())
    if not _CURRENT:
        _CURRENT.append(exercise)
    start = time.monotonic()
    yield
    _SPENT[exercise] = _SPENT.get(exercise, 0.0) + time.monotonic() - start


@_hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    budget = float(os.environ.get(ENV_BUDGET, "0") or 0)
    exercise = _exercise_id(item.nodeid)
    if os.environ.get(ENV_SUBMISSION) and budget > 0 and _SPENT.get(exercise, 0.0) > budget:
        raise TimeoutError(f"not run: {BUDGET_MESSAGE} {budget:g} s together")


def _message(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    return str(report.longrepr or "")


def outcome_of(report) -> str | None:
    """passed, failed, error, timeout, crashed, rejected, not started or skipped (None: nothing to record)."""
    if report.outcome == "skipped":
        return "not started" if _message(report).startswith("not started") else "skipped"
    if report.outcome == "failed":
        text = str(report.longrepr)
        for marker, outcome in (
            (NOT_OWN_MESSAGE, "rejected"),
            (TIMEOUT_MESSAGE, "timeout"),
            (BUDGET_MESSAGE, "timeout"),
            (CRASH_MESSAGE, "crashed"),
        ):
            if marker in text:
                return outcome
        return "failed" if report.when == "call" else "error"
    return "passed" if report.when == "call" else None


def pytest_runtest_logreport(report) -> None:
    if not os.environ.get(ENV_SUBMISSION) or (outcome := outcome_of(report)) is None:
        return
    entry = _REPORT.setdefault(
        report.nodeid,
        {
            "exercise": _exercise_id(report.nodeid),
            "name": report.nodeid.split("::", 1)[-1],
            "outcome": outcome,
            "message": "",
        },
    )
    if entry["outcome"] in ("passed", "skipped") or outcome not in ("passed", "skipped"):
        entry["outcome"] = outcome  # the worst of setup, call and teardown
        entry["message"] = "" if outcome == "passed" else _message(report)[:2000]


def pytest_sessionfinish(session, exitstatus) -> None:
    if not os.environ.get(ENV_SUBMISSION):
        return
    for exercise in list(_CURRENT):
        _finish(exercise)
    close_all()  # nothing the student started is alive when the report is written
    budget = float(os.environ.get(ENV_BUDGET, "0") or 0)
    exercises = {
        ex: {**_INFO.get(ex, {}), "seconds": spent, "over_budget": bool(budget and spent > budget)}
        for ex, spent in _SPENT.items()
    }
    report = {"tests": list(_REPORT.values()), "exercises": exercises, "exit_status": int(exitstatus)}
    path = pathlib.Path(os.environ[ENV_REPORT])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report))
    os.replace(tmp, path)

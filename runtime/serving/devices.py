"""The server's device configurations: one programmed Engine per (profile, overrides, votes),
programmed on a background thread and cached (at most ``max_engines``)."""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Callable

from nvmstream.converters.compile import CompiledModel
from nvmstream.converters.errors import NvmInputError
from nvmstream.devices import Device, ProfileError, list_profiles

from .. import protocol as P
from ..engine import Engine

log = logging.getLogger("nvmstream.runtime.server")

__all__ = ["Slot", "DeviceCache"]


class Slot:
    """One device configuration: its Engine (None while the programming thread builds it) and
    the streams on it that have a frame waiting."""

    def __init__(self, key, profile_name: str):
        self.key = key
        self.engine: Engine | None = None
        self.error: str | None = None          # programming failed: why
        self.profile_name = profile_name       # the name clients asked for
        self.ready: dict = {}                  # streams with a frame waiting (insertion order)
        self.waiting: list = []                # streams opened while programming
        self.streams = 0
        self.program_ms = 0.0
        self.e_done_pJ: float | None = 0.0     # energy of the streams that ended (pJ)

    def set_engine(self, engine: Engine) -> None:
        self.engine = engine
        self.names = [o.name for o in engine.model.outputs]
        self.widths = [int(engine.plan.widths[o.tensor]) for o in engine.model.outputs]
        self.width = sum(self.widths)


class DeviceCache:
    """Device configurations by key ``(profile argument, overrides, votes)``.

    :meth:`get` returns a cached slot or a new one whose device is programmed on one
    background thread (numpy and numba release the GIL for much of it); :meth:`finished`
    hands back what the thread completed. At most ``max_engines`` slots are held: one without
    streams is dropped (least recently used first) to make room, else ``too_many_devices``."""

    def __init__(self, prog: CompiledModel, *, device_seed: int, max_engines: int,
                 extra_profiles: dict[str, str], warm_up: Callable[[Engine], None]):
        self.prog = prog
        self.device_seed = device_seed
        self.max_engines = max_engines
        self.warm_up = warm_up
        self.profiles: dict[str, str] = {n: n for n in list_profiles()}
        self.profiles.update({str(k): str(v) for k, v in extra_profiles.items()})
        self.slots: collections.OrderedDict[tuple, Slot] = collections.OrderedDict()
        self.default_key: tuple | None = None
        self.default_name = ""
        self.default_overrides: tuple[str, ...] = ()
        self.default_profile_arg = ""
        self.default_votes = 1
        self.programming = 0
        self.dropped = 0
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        # a daemon thread: a device still being programmed never holds up the exit
        self._thread = threading.Thread(target=self._run_jobs, name="nvmstream-program",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._jobs.put(None)

    def _run_jobs(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._job(*job)

    def _build(self, profile_arg: str, overrides: list[str], votes: int,
               names: list | None = None) -> Engine:
        """Program a device and warm its engine up (programming thread, or at start);
        appends the profile's own name to ``names`` when given."""
        t0 = time.perf_counter()
        dev = Device(profile_arg, seed=self.device_seed, overrides=overrides or None)
        eng = Engine(self.prog, dev, votes=votes)
        self.warm_up(eng)
        if names is not None:
            names.append(dev.profile.name)
        log.info("programmed device %s (overrides %s, votes %d) in %.0f ms", dev.profile.name,
                 list(overrides), votes, 1e3 * (time.perf_counter() - t0))
        return eng

    def program_default(self, profile: str, overrides: tuple[str, ...], votes: int) -> Slot:
        """Program the server's default configuration now (errors propagate)."""
        own: list[str] = []
        eng = self._build(profile, list(overrides), votes, own)
        name = profile if profile in self.profiles else own[0]
        self.profiles.setdefault(name, profile)
        key = (profile, tuple(overrides), votes)
        slot = Slot(key, name)
        slot.set_engine(eng)
        self.slots[key] = slot
        self.default_key, self.default_name = key, name
        self.default_profile_arg, self.default_overrides = profile, tuple(overrides)
        self.default_votes = votes
        return slot

    @property
    def default(self) -> Slot:
        return self.slots[self.default_key]

    def get(self, profile: str | None, overrides: list[str], votes: int | None) -> Slot:
        """The slot of a configuration: cached, or new and being programmed (``slot.engine``
        None until :meth:`finished` returns it). Raises ProtocolError ``bad_profile`` for an
        unknown name, ``too_many_devices`` when every slot has streams."""
        if profile is None and not overrides and votes is None:
            return self.default
        if profile is None:
            name, profile_arg = self.default_name, self.default_profile_arg
            overrides = list(self.default_overrides) + list(overrides)
        else:
            if profile not in self.profiles:
                raise P.ProtocolError(P.BAD_PROFILE, f"unknown profile {profile!r}; this server "
                                                     f"has: {', '.join(sorted(self.profiles))}"
                                      [:500])
            name, profile_arg = profile, self.profiles[profile]
        votes = self.default_votes if votes is None else votes
        key = (profile_arg, tuple(overrides), votes)
        slot = self.slots.get(key)
        if slot is not None:
            self.slots.move_to_end(key)
            return slot
        if len(self.slots) >= self.max_engines and not self._evict():
            raise P.ProtocolError(P.TOO_MANY_DEVICES, f"the server holds its maximum of "
                                                      f"{self.max_engines} device "
                                                      f"configurations, all with open streams; "
                                                      f"use one of those or retry later")
        slot = Slot(key, name)
        self.slots[key] = slot
        self.programming += 1
        self._jobs.put((slot, profile_arg, list(overrides), votes))
        return slot

    def _job(self, slot: Slot, profile_arg: str, overrides: list[str], votes: int) -> None:
        t0 = time.perf_counter()
        try:
            eng, err = self._build(profile_arg, overrides, votes), None
        except (ProfileError, ValueError, TypeError, NvmInputError) as e:
            eng, err = None, str(e)[:500]
        except Exception as e:  # a bug: the open is answered `internal`
            log.exception("programming a device failed")
            eng, err = None, f"internal: {type(e).__name__}: {e}"[:500]
        slot.program_ms = 1e3 * (time.perf_counter() - t0)
        self._done.put((slot, eng, err))

    def finished(self) -> list[tuple[Slot, Engine | None, str | None]]:
        """What the programming thread completed since the last call: ``(slot, engine or
        None, error or None)``; a failed slot is no longer held."""
        out = []
        while True:
            try:
                slot, eng, err = self._done.get_nowait()
            except queue.Empty:
                return out
            self.programming -= 1
            if eng is None:
                slot.error = err
                if self.slots.get(slot.key) is slot:
                    del self.slots[slot.key]
            else:
                slot.set_engine(eng)
            out.append((slot, eng, err))

    def _evict(self) -> bool:
        for key, s in self.slots.items():
            if s.streams == 0 and key != self.default_key and s.engine is not None:
                del self.slots[key]
                self.dropped += 1
                log.info("dropped programmed device %s %s", s.profile_name, list(key[1]))
                return True
        return False

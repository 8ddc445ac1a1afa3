"""The CUDA state the stand-in keeps for its process: the current device (per thread), the
device CUDA was first initialised on, streams and events, and which streams have work queued
since their last synchronisation. Work runs at once on NumPy; only the bookkeeping is a
GPU's. Every host sync (wait_for) and every unit of device work (launch, upload) goes
through here."""
import itertools
import threading
import time
import weakref

from cupy import _counters
from cupy.cuda import runtime

_thread = threading.local()     # .device: the current device; .streams: {device: Stream}
_initialised_on = None          # the device CUDA was first initialised on, if any
_devices_used = set()
_streams = weakref.WeakValueDictionary()  # ptr -> Stream, for NCCL's stream arguments
_null_streams = {}              # device -> its default (null) stream
_pointers = itertools.count(0x7F0000001000, 0x1000)  # fake, unique, nonzero handles
_strict_handoff = False


def current_device_id():
    return getattr(_thread, "device", 0)


def set_current_device(device):
    _thread.device = device


def touch(device=None):
    """Initialise CUDA on `device` (default: the current one) at its first use, as the CUDA
    runtime does on an allocation, a kernel, a stream or cudaSetDevice; fails as CUDA does
    without that device."""
    global _initialised_on
    device = current_device_id() if device is None else device
    if device not in _devices_used:
        runtime._check_device(device)
        _devices_used.add(device)
        if _initialised_on is None:
            _initialised_on = device


def cuda_initialised_on():
    """The device this process initialised CUDA on first, or None while it has not."""
    return _initialised_on


def devices_used():
    """The devices this process has initialised, sorted."""
    return sorted(_devices_used)


def strict_handoff(on):
    """In strict mode, reading an array's __cuda_array_interface__ (what CUDA-aware MPI reads)
    while the current stream has unsynchronised work raises RuntimeError. mpi4py asks
    hasattr() first, which swallows the error: MPI then refuses the buffer with its own
    TypeError ("expecting buffer"). Returns the previous setting."""
    global _strict_handoff
    previous, _strict_handoff = _strict_handoff, bool(on)
    return previous


def check_handoff():
    stream = get_current_stream()
    if _strict_handoff and stream._pending():
        raise RuntimeError(f"device buffer handed over with unsynchronised work on stream "
                           f"{stream.ptr:#x}: synchronise it first")


def pending_work(stream=None):
    """Whether `stream` (default: the current one) has work queued since it was last
    synchronised."""
    return (stream or get_current_stream())._pending()


def launch(kernels=1, stream=None):
    """`kernels` kernel launches on `stream` (default: the current one)."""
    touch()
    (stream or get_current_stream())._queued += kernels
    _counters.record("ops", kernels)


def upload():
    """A host-to-device copy, queued on the current stream."""
    touch()
    get_current_stream()._queued += 1
    _counters.record("uploads")


def wait_for(streams):
    """A host sync: the host waits until `streams` have run the work queued so far."""
    _counters.record("syncs")
    for stream in streams:
        stream._synced_to(stream._queued)


def stall(stream):
    """Make the work queued on `stream` from now on never finish, as a hung kernel (a
    collective whose peer never comes): its events stay not done, and a host sync that
    waits for it blocks for ever (tests of watchdogs)."""
    stream._stalled_at = stream._queued


def _learnt(stream, position):
    """A query found `stream` done up to `position`. The bookkeeping follows what the main
    (training) thread knows: a watchdog thread's polls tell it nothing."""
    if threading.current_thread() is threading.main_thread():
        stream._synced_to(position)


def read_back():
    """A device-to-host copy: CuPy queues it on the current stream and waits for it."""
    wait_for([get_current_stream()])


class _NullStreamOfCurrentDevice:
    def __get__(self, instance, owner):
        return _null_stream(current_device_id())


class Stream:
    """A CUDA stream. Work runs eagerly, so a stream only records whether work was queued on
    it since it was last synchronised (and what it waits for on other streams)."""
    null = _NullStreamOfCurrentDevice()

    def __init__(self, non_blocking=False):
        touch()  # cudaStreamCreate
        self._start(next(_pointers), current_device_id(), non_blocking)
        _streams[self.ptr] = self

    def _start(self, ptr, device, non_blocking):
        self.ptr, self.device_id, self._non_blocking = ptr, device, non_blocking
        self._queued = self._synced = 0
        self._stalled_at = None  # stall(): work queued past this position never finishes
        self._waits = []  # (own position, stream, its position): this stream waits for that
        self._previous = []

    @property
    def is_non_blocking(self):
        return self._non_blocking

    def _pending(self):
        return self._queued > self._synced

    def _finishes(self, position):
        return self._stalled_at is None or position <= self._stalled_at

    def _synced_to(self, position):
        while not self._finishes(position):  # a hung kernel: the host waits for ever
            time.sleep(1)
        self._synced = max(self._synced, position)
        later = []
        for own, other, theirs in self._waits:
            if own <= position:
                other._synced_to(theirs)
            else:
                later.append((own, other, theirs))
        self._waits = later

    def use(self):
        if not hasattr(_thread, "streams"):
            _thread.streams = {}
        _thread.streams[self.device_id] = self
        return self

    def __enter__(self):
        self._previous.append(get_current_stream())
        return self.use()

    def __exit__(self, *exc):
        self._previous.pop().use()

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        """Later work on this stream waits for the work `event` recorded."""
        if event._stream is not None and event._stream._synced < event._position:
            self._queued += 1
            self._waits.append((self._queued, event._stream, event._position))

    @property
    def done(self):
        """True (unless stalled): the stand-in has run everything already; seeing it done
        counts as knowing the queued work finished (not as a sync: the query does not
        block)."""
        if not self._finishes(self._queued):
            return False
        _learnt(self, self._queued)
        return True

    def synchronize(self):
        touch(self.device_id)
        wait_for([self])

    def __repr__(self):
        return f"<Stream {self.ptr:#x} (device {self.device_id})>"


def _null_stream(device):
    if device not in _null_streams:
        _null_streams[device] = Stream.__new__(Stream)  # exists without creating anything
        _null_streams[device]._start(0, device, False)
    return _null_streams[device]


def get_current_stream():
    return getattr(_thread, "streams", {}).get(current_device_id()) or \
        _null_stream(current_device_id())


def stream_at(ptr):
    """The Stream whose handle is `ptr` (0: the current device's null stream)."""
    return _null_stream(current_device_id()) if ptr == 0 else _streams[ptr]


class Event:
    """A CUDA event: marks a point in a stream's work."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        touch()  # cudaEventCreate
        self.ptr = next(_pointers)
        self._stream, self._position = None, 0

    def record(self, stream=None):
        self._stream = stream or get_current_stream()
        self._position = self._stream._queued

    @property
    def done(self):
        if self._stream is not None:
            if not self._stream._finishes(self._position):
                return False
            _learnt(self._stream, self._position)
        return True

    def synchronize(self):
        wait_for([])
        if self._stream is not None:
            self._stream._synced_to(self._position)


class Device:
    """A CUDA device: `Device()` is the current one."""
    __slots__ = ("id", "_previous")

    def __init__(self, device=None):
        self.id = current_device_id() if device is None else int(device)
        self._previous = []

    def use(self):
        """Make it current (cudaSetDevice, which initialises CUDA on it since CUDA 12)."""
        touch(self.id)
        set_current_device(self.id)

    def synchronize(self):
        touch(self.id)
        wait_for([s for s in [*_streams.values(), *_null_streams.values()]
                  if s.device_id == self.id])

    @property
    def compute_capability(self):
        return "90"

    @property
    def mem_info(self):
        """(free, total) bytes: an H100's, as a fresh process sees it."""
        touch(self.id)
        return 79 * 2**30, 80 * 2**30

    def __enter__(self):
        self._previous.append(current_device_id())
        self.use()
        return self

    def __exit__(self, *exc):
        set_current_device(self._previous.pop())

    def __int__(self):
        return self.id

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


def get_device_id():
    return current_device_id()


class MemoryPointer:
    """Where an array's memory is: `ptr`, its address, on device `device_id`."""
    __slots__ = ("ptr", "device_id")

    def __init__(self, ptr, device_id):
        self.ptr, self.device_id = ptr, device_id

    @property
    def device(self):
        return Device(self.device_id)

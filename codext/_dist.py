"""Rendezvous of a data-parallel run's ranks: who am I, where is the store, how do we find
the shared-memory segment or the NCCL communicator (docs/distributed.md).

Three ways a worker learns its place, checked against each other:

- codext.launch() sets CODEXT_RANK, CODEXT_WORLD_SIZE, CODEXT_STORE_ADDR,
  CODEXT_STORE_PORT and CODEXT_STORE_SECRET (hex) for each worker it starts; the launcher
  hosts the store on 127.0.0.1 and has already put the segment's name in it.
- torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT
  (and TORCHELASTIC_RUN_ID): its own agent already listens on MASTER_PORT (torch's store),
  so rank 0 hosts ours on a free port the kernel picks, on 127.0.0.1, and publishes that
  port in the rendezvous file below, keyed by MASTER_PORT, TORCHELASTIC_RUN_ID and
  TORCHELASTIC_RESTART_COUNT (what every worker of one attempt shares). Variables set by
  hand without TORCHELASTIC_RUN_ID: rank 0 hosts the store on MASTER_PORT.
- srun sets SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_NODELIST (the first host
  is the master; MASTER_PORT, or 29500).

Where two of them are set they must agree (RANK == SLURM_PROCID, ...): a mismatch is a
ValueError naming both variables and values.

The store's secret: CODEXT_STORE_SECRET (hex, at least 16 bytes) when set, which a
multi-host run must set on every host (the same value). On one host, rank 0 writes the
store's port and, without CODEXT_STORE_SECRET, a fresh random secret to a rendezvous file
only this user can read (in $XDG_RUNTIME_DIR or /tmp/codext-<uid>, mode 0700/0600) keyed
by the master port (and, under torchrun, its run id and restart count); the other ranks
read it, and rank 0 removes it once every rank has joined. A file an earlier run left
behind under the same key can be read before rank 0 replaces it: it fails the store's
proof (another secret) or finds no store, and the reader reads the file again.
"""
import dataclasses
import os
import secrets
import socket
import stat
import time

from . import _C

DEFAULT_TIMEOUT = 600.0
ENV_RANK, ENV_WORLD = "CODEXT_RANK", "CODEXT_WORLD_SIZE"
ENV_ADDR, ENV_PORT, ENV_SECRET = "CODEXT_STORE_ADDR", "CODEXT_STORE_PORT", "CODEXT_STORE_SECRET"
ENV_WORKER = "CODEXT_WORKER"  # set in every worker: launch() refuses to run inside one
SHM_KEY = "shm_name"
NCCL_KEY = "nccl_unique_id"       # rank 0's ncclUniqueId (128 bytes)
TRANSPORT_KEY = "gpu_transport"   # rank 0's choice for GPU ranks: b"nccl" or b"shm"
NCCL_SHM_KEY = "nccl_shm_disable" # rank 0's: b"1" when /dev/shm is too small for NCCL's shm
ENV_TRANSPORT = "CODEXT_GPU_TRANSPORT"  # "shm": GPU ranks stage through shared memory
LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


@dataclasses.dataclass
class Place:
    """Where this process sits in the run."""
    rank: int
    world: int
    local_rank: int
    local_world: int
    master_addr: str
    master_port: int
    source: str                  # "codext.launch", "torchrun", "slurm"
    secret: bytes = None         # None: make or read the per-user secret file
    # under torchrun's agent (TORCHELASTIC_RUN_ID set): its run id and restart count. The
    # agent holds MASTER_PORT, so our store takes a free port, published in the rendezvous
    # file keyed by these. None: not under the agent.
    agent_run: str = None

    @property
    def single_host(self):
        return self.local_world == self.world


def _int(env, name):
    value = env.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def _agree(pairs):
    """pairs: [(name, value, name, value)]; both set and different -> ValueError."""
    for a, va, b, vb in pairs:
        if va is not None and vb is not None and va != vb:
            raise ValueError(f"the launch environment disagrees with itself: {a}={va} but "
                             f"{b}={vb} (set by different launchers? unset one of them)")


def _first_slurm_host(nodelist):
    """'node[01-04,07],gpu5' -> 'node01' (the first host of a Slurm node list)."""
    head = nodelist.split(",")[0] if "[" not in nodelist.split(",")[0] else nodelist
    if "[" in head:
        prefix, rest = head.split("[", 1)
        first = rest.split(",")[0].split("-")[0].rstrip("]")
        return prefix + first
    return head


def _secret_from_env(env):
    text = env.get(ENV_SECRET)
    if text is None:
        return None
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{ENV_SECRET} must be hex (e.g. from `openssl rand -hex 32`)") from None
    if len(value) < 16:
        raise ValueError(f"{ENV_SECRET} must hold at least 16 bytes (32 hex digits), got {len(value)}")
    return value


def place_from_env(env=None):
    """The Place this process was given by codext.launch, torchrun or Slurm, or None when
    none of them set anything. ValueError for incomplete or disagreeing variables."""
    env = os.environ if env is None else env
    ours = _int(env, ENV_RANK), _int(env, ENV_WORLD)
    torch = _int(env, "RANK"), _int(env, "WORLD_SIZE")
    slurm = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
    pairs = [(ENV_RANK, ours[0], "RANK", torch[0]), (ENV_WORLD, ours[1], "WORLD_SIZE", torch[1])]
    if "TORCHELASTIC_RUN_ID" not in env:
        # under `srun torchrun ...` Slurm's variables count torchrun agents, not ranks
        pairs += [("RANK", torch[0], "SLURM_PROCID", slurm[0]),
                  ("WORLD_SIZE", torch[1], "SLURM_NTASKS", slurm[1]),
                  ("LOCAL_RANK", _int(env, "LOCAL_RANK"), "SLURM_LOCALID", _int(env, "SLURM_LOCALID"))]
    _agree(pairs)
    if ours[0] is not None or ours[1] is not None:
        source, (rank, world), rank_name, world_name = "codext.launch", ours, ENV_RANK, ENV_WORLD
    elif torch[0] is not None or torch[1] is not None:
        source, (rank, world), rank_name, world_name = "torchrun", torch, "RANK", "WORLD_SIZE"
    elif slurm[0] is not None and slurm[1] is not None and slurm[1] > 1:
        source, (rank, world), rank_name, world_name = "slurm", slurm, "SLURM_PROCID", "SLURM_NTASKS"
    else:
        return None
    if rank is None or world is None:
        raise ValueError(f"{rank_name} and {world_name} must be set together "
                         f"(got {rank_name}={rank}, {world_name}={world})")
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"{rank_name}={rank} is not a rank of {world_name}={world}")
    local_rank = _int(env, "LOCAL_RANK")
    if local_rank is None:
        local_rank = _int(env, "SLURM_LOCALID")
    local_world = _int(env, "LOCAL_WORLD_SIZE")
    if local_world is None and source == "slurm":
        nodes = _int(env, "SLURM_NNODES") or _int(env, "SLURM_JOB_NUM_NODES") or 1
        local_world = world if nodes == 1 else None
    if source == "codext.launch":
        addr, port = env.get(ENV_ADDR, "127.0.0.1"), _int(env, ENV_PORT)
        if port is None:
            raise ValueError(f"{ENV_PORT} is missing: codext workers are started by codext.launch()")
        local_rank, local_world = rank, world
    else:
        addr = env.get("MASTER_ADDR")
        if addr is None and source == "slurm" and env.get("SLURM_JOB_NODELIST"):
            addr = _first_slurm_host(env["SLURM_JOB_NODELIST"])
        if addr is None:
            raise ValueError(f"MASTER_ADDR is not set ({source} run with {world_name}={world})")
        port = _int(env, "MASTER_PORT")
        if port is None:
            port = 29500 if source == "slurm" else None
        if port is None:
            raise ValueError("MASTER_PORT is not set")
    if not 1 <= port <= 65535:
        raise ValueError(f"the master port {port} is outside 1..65535")
    if local_rank is None:
        local_rank = rank if addr in LOOPBACK else 0
    if local_world is None:
        local_world = world if addr in LOOPBACK else 1
    agent = None
    if source == "torchrun" and "TORCHELASTIC_RUN_ID" in env:
        agent = f"{env['TORCHELASTIC_RUN_ID']}\0{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return Place(rank=rank, world=world, local_rank=local_rank, local_world=local_world,
                 master_addr=addr, master_port=port, source=source, secret=_secret_from_env(env),
                 agent_run=agent)


# ---- the per-user secret file (one host, no CODEXT_STORE_SECRET) ------------------------------

def _secret_dir():
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not os.path.isdir(base):
        base = os.path.join("/tmp", f"codext-{os.getuid()}")
        os.makedirs(base, mode=0o700, exist_ok=True)
    info = os.lstat(base)
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077 or not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{base} must be a directory of this user with mode 0700 "
                              f"(it holds the run's store secret); fix it or set {ENV_SECRET}")
    return base


def _secret_path(port, agent_run=None):
    # the run id is the user's text (torchrun --rdzv_id): hashed into the name
    tail = "-" + _C.sha256(agent_run.encode()).hex()[:16] if agent_run else ""
    return os.path.join(_secret_dir(), f"codext-store-{port}{tail}.secret")


def write_secret_file(port, store_port=None, secret=None, agent_run=None):
    """Rank 0's rendezvous file: the store's port and the secret (a fresh one when None;
    b"" writes none: the ranks have CODEXT_STORE_SECRET), written whole (a rename) so a
    reader never sees half. Returns (secret, path)."""
    path = _secret_path(port, agent_run)
    value = secrets.token_bytes(32) if secret is None else secret
    tmp = f"{path}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(b"%d\n%s\n" % (port if store_port is None else store_port, value.hex().encode()))
    os.replace(tmp, path)
    return value, path


def read_secret_file(port, agent_run=None):
    """(store port, secret or None) from rank 0's rendezvous file, or None while it is
    missing or not in this format (an older codext's file: rank 0 replaces it)."""
    try:
        with open(_secret_path(port, agent_run), "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        port_text, secret_text = text.split(b"\n")[:2]
        store_port, value = int(port_text), bytes.fromhex(secret_text.decode())
    except ValueError:
        return None
    if not 1 <= store_port <= 65535 or 0 < len(value) < 16:
        return None
    return store_port, value or None


# ---- connecting ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Connection:
    place: Place
    comm: object                 # _C.ShmComm, or _C.NcclComm for GPU ranks
    store: object                # _C.StoreClient
    server: object = None        # _C.StoreServer when this rank hosts the store
    secret_file: str = None
    transport: str = "shared memory"  # what carries the collectives, in words (for the log)

    def close(self):
        for obj in (self.comm, self.store, self.server):
            if obj is not None:
                obj.close()
        if self.secret_file:
            try:
                os.unlink(self.secret_file)
            except FileNotFoundError:
                pass


def new_shm_name():
    return f"/codext-{os.getpid()}-{secrets.token_hex(8)}"


def segment_name(world, log=None, shm_dir="/dev/shm"):
    """A fresh name for the run's collectives segment: in /dev/shm when it has room,
    else a file-backed segment ("file:<tmpdir>/codext-...") with a note through `log`
    (Docker gives /dev/shm 64 MB unless told otherwise)."""
    need = _C.shm_segment_bytes(world)
    try:
        st = os.statvfs(shm_dir)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    name = new_shm_name()
    if free is not None and free >= need:
        return name
    import tempfile
    path = os.path.join(tempfile.gettempdir(), name.lstrip("/"))
    if log is not None:
        shown = "missing" if free is None else f"{free / 2**20:.1f} MiB free"
        log(f"codext: {shm_dir} is too small for the collectives of {world} workers ({shown}, "
            f"{need / 2**20:.1f} MiB needed): using a file-backed segment in {os.path.dirname(path)}")
    return "file:" + path


# NCCL's shared-memory transport keeps its buffers in /dev/shm (several MiB per channel and
# pair of GPUs); Docker's default 64 MB (Kaggle) is not enough and NCCL then fails at its
# first collective. Below this much free space the GPU workers run with NCCL_SHM_DISABLE=1
# (NCCL takes P2P or its network transport between the GPUs instead).
NCCL_SHM_MIN_FREE = 512 << 20


def nccl_shm_env(log=None, shm_dir="/dev/shm", environ=None):
    """{"NCCL_SHM_DISABLE": "1"} for GPU workers when shm_dir has less than
    NCCL_SHM_MIN_FREE free (saying so through log), else {}; a NCCL_SHM_DISABLE the user
    set is left alone."""
    environ = os.environ if environ is None else environ
    if "NCCL_SHM_DISABLE" in environ:
        return {}
    try:
        st = os.statvfs(shm_dir)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = 0
    if free >= NCCL_SHM_MIN_FREE:
        return {}
    if log is not None:
        log(f"codext: {shm_dir} has {free / 2**20:.1f} MiB free, less than NCCL's shared-memory "
            f"transport needs ({NCCL_SHM_MIN_FREE >> 20} MiB): the GPU workers run with "
            f"NCCL_SHM_DISABLE=1 (NCCL uses P2P or sockets between the GPUs)")
    return {"NCCL_SHM_DISABLE": "1"}


def remove_segment(name):
    """Removes a segment left by ranks that died before attaching (normally rank 0 has
    already unlinked it)."""
    path = name[len("file:"):] if name.startswith("file:") else "/dev/shm" + name
    try:
        os.unlink(path)
    except OSError:
        pass


def gpu_ordinal(device):
    """The CUDA device ordinal of a resolved device string ("cuda:N" -> N), None for "cpu"."""
    if device is None or not str(device).startswith("cuda"):
        return None
    _, _, index = str(device).partition(":")
    return int(index) if index else 0


def _nccl_choice(device, env=None):
    """(True, NCCL version text) when this GPU rank should use NCCL, else (False, why not)."""
    env = os.environ if env is None else env
    if gpu_ordinal(device) is None:
        return False, "CPU ranks use shared memory"
    wanted = env.get(ENV_TRANSPORT, "auto")
    if wanted not in ("auto", "nccl", "shm"):
        raise ValueError(f"{ENV_TRANSPORT} must be 'auto', 'nccl' or 'shm', got {wanted!r}")
    if wanted == "shm":
        return False, f"{ENV_TRANSPORT}=shm"
    ok, text = _C.nccl_available()
    if not ok and wanted == "nccl":
        raise RuntimeError(f"{ENV_TRANSPORT}=nccl but NCCL is not usable: {text}")
    return ok, text


def connect(place, timeout=DEFAULT_TIMEOUT, device=None):
    """Joins the run: the store (hosted here when this is rank 0 of torchrun/Slurm), then
    the communicator. device: this rank's resolved device ("cpu", "cuda:N"; None: CPU).
    GPU ranks use NCCL when the loaded CUDA library provides it (rank 0 makes the unique id
    and shares it through the store; CODEXT_GPU_TRANSPORT=shm forces the staged
    shared-memory path), else shared memory with the gradients staged through host memory;
    rank 0 decides and every rank follows. CPU ranks use shared memory. Returns a
    Connection (close() it); its `transport` says which, in words."""
    if not place.single_host:
        raise RuntimeError(
            f"this run spans several hosts ({place.world} ranks, {place.local_world} on this "
            f"host): CPU workers communicate through shared memory on one host only, and "
            f"multi-host NCCL runs are not supported yet")
    server, secret_file, secret = None, None, place.secret
    # every rank is on this host (checked above): the store listens on loopback and is
    # reached there, whatever MASTER_ADDR or Slurm's node list name this host as
    host = place.master_addr if place.source == "codext.launch" else "127.0.0.1"
    if place.source != "codext.launch" and place.rank == 0:
        bind = "127.0.0.1"
        if secret is None:
            secret = secrets.token_bytes(32)
        try:
            if place.agent_run:  # torchrun's agent listens on MASTER_PORT: ours takes a free port
                server = _C.StoreServer(bind, 0, secret)
            else:
                server = _C.StoreServer(bind, place.master_port, secret)
        except RuntimeError as e:
            where = ("on a free port" if place.agent_run else
                     f"on port {place.master_port} ({place.source}'s MASTER_PORT)")
            raise RuntimeError(f"rank 0 cannot host the rendezvous store {where}: {e}") from None
        if place.secret is None or place.agent_run:
            try:  # the environment's secret stays out of the file
                _, secret_file = write_secret_file(place.master_port, server.port,
                                                   b"" if place.secret else secret,
                                                   place.agent_run)
            except BaseException:
                server.close()
                raise
    if host in ("localhost", "0.0.0.0", "::1"):
        host = "127.0.0.1"
    else:
        host = socket.gethostbyname(host)
    try:
        store = _connect_store(place, host, secret, timeout)
    except BaseException:
        _drop(server, secret_file)
        raise
    try:
        comm, transport = _join(place, store, timeout, device)
        if place.source != "codext.launch" and (place.secret is None or place.agent_run):
            # a rendezvous file: every rank has read it once every rank is past this barrier
            comm.barrier()
            _drop(None, secret_file)
            secret_file = None
    except BaseException:
        store.close()
        _drop(server, secret_file)
        raise
    return Connection(place, comm, store, server, secret_file, transport)


def _drop(server, secret_file):
    """Rank 0's store and rendezvous file, after a failed join."""
    if server is not None:
        server.close()
    if secret_file:
        try:
            os.unlink(secret_file)
        except FileNotFoundError:
            pass


def _join(place, store, timeout, device):
    """(communicator, transport in words) for this rank (see connect)."""
    ordinal = gpu_ordinal(device)
    use_nccl = False
    if ordinal is not None:
        if place.rank == 0:
            use_nccl, text = _nccl_choice(device)
            store.set(TRANSPORT_KEY, b"nccl" if use_nccl else b"shm")
            if use_nccl:
                store.set(NCCL_KEY, _C.nccl_unique_id())
        use_nccl = store.get(TRANSPORT_KEY, timeout) == b"nccl"
        if use_nccl and place.rank != 0:
            ok, text = _C.nccl_available()
            if not ok:
                raise RuntimeError(f"rank {place.rank}: rank 0 chose NCCL for the GPU ranks, but "
                                   f"NCCL is not usable here: {text}")
    if use_nccl:
        if place.source != "codext.launch":  # (codext.launch sets it in the workers' env)
            # one decision for every rank (rank 0's look at /dev/shm): NCCL must not pick
            # its shared-memory transport on one end of a connection only
            if place.rank == 0:
                store.set(NCCL_SHM_KEY, b"1" if nccl_shm_env(log=print) else b"0")
            if store.get(NCCL_SHM_KEY, timeout) == b"1":
                os.environ.setdefault("NCCL_SHM_DISABLE", "1")
        unique_id = store.get(NCCL_KEY, timeout)
        comm = _C.NcclComm(unique_id, place.rank, place.world, timeout=timeout, device=ordinal)
        return comm, (f"NCCL ({text}): device gradients all-reduced in place (ncclAvg), "
                      f"watchdog timeout {timeout:g} s")
    if place.source != "codext.launch" and place.rank == 0:
        store.set(SHM_KEY, segment_name(place.world, log=print).encode())
    name = store.get(SHM_KEY, timeout).decode()
    comm = _C.ShmComm(name, place.rank, place.world, timeout=timeout)
    if ordinal is None:
        return comm, "shared memory"
    why = text if place.rank == 0 else "rank 0's choice"
    return comm, (f"shared memory, device gradients staged through host memory (NCCL not "
                  f"used: {why})")


def _connect_store(place, host, secret, timeout):
    if secret is not None and not place.agent_run:
        return _C.StoreClient(host, place.master_port, secret, timeout)
    # one host: rank 0 writes the rendezvous file (the store's port and secret); a file left
    # by an earlier run on the same port fails the proof, so read it again until rank 0's
    deadline = time.monotonic() + timeout
    while True:
        found = read_secret_file(place.master_port, place.agent_run)
        if found is not None and (found[1] is not None or secret is not None):
            store_port, value = found
            try:
                return _C.StoreClient(host, store_port, value if secret is None else secret,
                                      min(5.0, timeout))
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
        elif time.monotonic() > deadline:
            raise RuntimeError(f"rank {place.rank}: rank 0 did not publish the store's port and "
                               f"secret within {timeout:.0f} s (check that rank 0 started)")
        time.sleep(0.05)

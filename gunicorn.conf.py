"""Gunicorn settings for the prediction server: ``gunicorn -c gunicorn.conf.py wsgi:application``.

Every value comes from the one typed config (``service.config.Config``, read from the
environment), so Gunicorn and the app never disagree about the bind address or the workers.
"""

import gc
import os
import sys

# One BLAS/OpenMP thread per worker. Workers are the unit of parallelism; letting each
# numpy/scikit-learn call also spawn one thread per core oversubscribes the CPU and makes
# latency erratic. Set before any worker imports numpy (workers import the app after fork).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# No ONNX Runtime telemetry. Importing onnxruntime with telemetry on builds its 1DS uploader
# (OneDsTelemetry, core/platform/posix/telemetry_1ds.cc) and starts that uploader's worker
# std::thread. Imported in the master (``on_starting``), every forked worker inherits the
# uploader but not its thread, and at exit the uploader's destructor joins a thread that is not
# in the process: std::thread::join throws std::system_error (EINVAL) from a destructor, the
# worker aborts (SIGABRT) on every recycle, HUP and stop. A prediction server has no business
# uploading usage data either. ORT_DISABLE_TELEMETRY=0 turns it back on; the master then
# leaves onnxruntime to the workers (see ``on_starting``).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# No jemalloc background thread in pyarrow (pandas imports pyarrow for its string dtype, and the
# master imports pandas before forking): a thread alive in the master at fork is missing from
# every worker, whatever its library expects of it. Arrow's allocator works without it.
os.environ.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")

from service.access_log import JsonLogger  # noqa: E402
from service.config import Config  # noqa: E402
from service.errors import ConfigError  # noqa: E402
from service.logs import configure_logging  # noqa: E402

try:
    _config = Config.from_env()
    configure_logging(_config.log_level)  # so the checks below log JSON like everything else
    # Refuse to start open on a public address, or with a bad alert rules file, here in the
    # master with one clear line, instead of letting every worker fail to boot.
    from service.monitoring.alerts import load_rules
    from service.security.keys import load_policy
    from service.security.signing import model_keys

    load_policy(_config)
    load_rules(_config.alert_rules_file)
    model_keys(_config.signing_key, _config.trusted_keys)  # an unreadable trusted key: one line, here
except (ConfigError, ValueError) as _exc:
    sys.stderr.write(f"configuration error: {_exc}\n")
    sys.exit(2)

# -- where and how many --------------------------------------------------------------------
# IPv6 literals need brackets in a bind string.
bind = [f"[{_config.host}]:{_config.port}" if ":" in _config.host else f"{_config.host}:{_config.port}"]
# WEB_CONCURRENCY (default 2): processes; they share the models the master loaded (see below).
workers = _config.workers
# THREADS (default 1): threads per worker that run requests. More help when requests wait on
# I/O; prediction is CPU-bound and holds the GIL, so processes are what scale it.
threads = _config.threads
# The worker class follows from where the clients are. Behind a buffering proxy declared in
# FORWARDED_ALLOW_IPS (Nginx, Apache, an ingress), every request arrives whole and at once, and
# the sync worker (gthread when THREADS > 1) is the cheapest per prediction. With no proxy
# declared, clients reach the workers themselves and a sync worker (or a gthread thread) reading
# a request that trickles in is held for as long as the client likes: two such clients stalled
# both default workers, eight a THREADS=4 server. service.buffering.BufferingWorker reads each
# request whole in its main loop, without blocking, before a thread runs it (a proxy's
# buffering, inside the worker): 64 trickling clients leave /healthz at a few milliseconds.
# REQUEST_READ_TIMEOUT (default 30 s) is how long one request may take to arrive; the body is
# bounded by MAX_REQUEST_BYTES and the headers by the limits below, as Gunicorn's parser does.
if _config.forwarded_allow_ips:
    worker_class = "gthread" if threads > 1 else "sync"
else:
    from service.buffering import BufferingWorker

    worker_class = BufferingWorker.limited(max_body=_config.max_request_bytes,
                                           read_timeout=_config.request_read_timeout)

# -- time ------------------------------------------------------------------------------------
# WORKER_TIMEOUT (default 60 s): a worker silent for longer is killed and replaced. Models
# are loaded while the worker boots, so this must exceed the slowest model load (the
# demo models load in milliseconds; large forests can take tens of seconds) and the slowest
# request (a MAX_BATCH_ROWS batch).
timeout = _config.timeout
# On SIGTERM workers stop accepting and get this long to finish requests in flight.
graceful_timeout = 30
# Seconds to hold an idle keep-alive connection (behind Nginx, keep this above 0).
keepalive = 5

# -- recycling -------------------------------------------------------------------------------
# WORKER_MAX_REQUESTS (default 100,000; 0 = never): replace a worker after about this many
# requests, to bound slow leaks. A replacement costs ~1-2 s without that worker (exit, fork,
# model load), so it must be rare: at 5,000 a busy worker was replaced every few seconds and
# p99 rose from ~40 ms to seconds when both restarted together (make bench measures it). The
# jitter (a fifth) keeps workers from reaching the limit at the same moment.
max_requests = _config.worker_max_requests
max_requests_jitter = max_requests // 5
# WORKER_MEMORY_GROWTH_MB (default 512; 0 = off): the leak that matters is memory, so a
# worker whose resident memory grew this much since it was ready finishes its request and is
# replaced (checked every MEMORY_CHECK_EVERY requests in ``post_request``).
MEMORY_CHECK_EVERY = 64

# -- loading models --------------------------------------------------------------------------
# preload_app = False, on purpose: each worker builds the app itself after fork, so it buys
#   * independent hot reloads: every worker follows registry.json on its own, so a new
#     version is picked up without HUP (HUP with preload would not rebuild the app);
#   * native thread pools (OpenMP, BLAS) and the app's threads, created after fork, never inherited.
# The model versions on disk are the exception: the master verifies, unpickles and prepares
# them, and opens their ONNX Runtime sessions, before the first fork (``when_ready``, again on
# HUP in ``on_reload``, which also checks again what it holds), and a worker that finds the
# same files (manifest.json byte for byte, every file hashed again) serves the master's copy,
# shared copy-on-write: an extra worker then costs a fraction of the first (``python -m
# bench.memory`` prints it). A version that fails there is left to the workers, which refuse it
# as always; a version that appears later is loaded by the worker that finds it. The cost: a
# pickle that crashes the interpreter (not one that raises) would take the master down, and only
# verified files are ever unpickled.
preload_app = False


def on_starting(server):
    """Import the heavy libraries (never the models) once in the master.

    Workers then fork with numpy, pandas and scikit-learn already imported, so booting or
    recycling a worker costs the model load (milliseconds) instead of ~2 s of imports during
    which that worker answers nothing. Safe to do before fork because the master stays one
    thread: the thread-count variables above keep BLAS/OpenMP from starting a pool, and
    ORT_DISABLE_TELEMETRY keeps onnxruntime from starting its uploader.
    """
    import flask  # noqa: F401
    import marshmallow  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import sklearn.pipeline  # noqa: F401
    import sklearn.preprocessing  # noqa: F401

    import service.app  # (brings joblib and the service modules, never a model)

    service.app.preload_modules()  # what create_app imports, so the workers share it (~10 MiB each)
    try:
        # TreeSHAP (numba, llvmlite): every worker serving a tree model imports it when the version
        # loads (its explanation cost is measured then); imported here it is one shared copy, not
        # ~55 MiB of private memory per worker. It starts no thread.
        import shap  # noqa: F401
    except ImportError:
        pass

    if _ort_telemetry_off():  # with telemetry on, the import starts a thread no forked worker would have
        try:
            import onnxruntime  # noqa: F401  (no thread pool until a worker makes a session)
        except ImportError:
            pass
    else:
        server.log.info("ONNX Runtime telemetry is on (ORT_DISABLE_TELEMETRY): each worker imports onnxruntime "
                        "itself, after fork")
    # Move everything imported so far out of the collector's reach: a worker's garbage
    # collections then never write to these pages, so they stay shared with the master
    # (about 37 MiB less private memory per worker, measured with smaps_rollup).
    gc.freeze()


def _ort_telemetry_off() -> bool:
    """Whether ONNX Runtime reads ORT_DISABLE_TELEMETRY as off (it takes 1, true, yes and on, in any case)."""
    return os.environ.get("ORT_DISABLE_TELEMETRY", "").strip().lower() in {"1", "true", "yes", "on"}


# -- proxies ---------------------------------------------------------------------------------
# FORWARDED_ALLOW_IPS (default: nobody): the proxies whose X-Forwarded-Proto Gunicorn believes.
# Gunicorn's own default trusts 127.0.0.1, which would let any local process claim https;
# the app applies the same list to X-Forwarded-For/-Host (service.api.proxy).
forwarded_allow_ips = ",".join(_config.forwarded_allow_ips)

# -- control socket --------------------------------------------------------------------------
# Gunicorn's runtime control socket lives at one path per user; two servers on one host would
# fight over it and we do not use it. Manage the server with signals (TERM, HUP, TTIN/TTOU).
control_socket_disable = True

# -- request limits (Gunicorn's own, before the app sees anything) ---------------------------
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# -- logs ------------------------------------------------------------------------------------
accesslog = "-"
errorlog = "-"
loglevel = _config.log_level


logger_class = JsonLogger  # its own lines and the access log as JSON objects (service/access_log.py)


# -- hooks -----------------------------------------------------------------------------------
def post_worker_init(worker):
    """Cap native thread pools, open every ONNX Runtime session, then note the worker's memory.

    The sessions are made here, before the worker accepts a request, so a fresh or recycled
    worker's first requests do not pay 4-120 ms each for them.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    extensions = getattr(getattr(worker, "wsgi", None), "extensions", {})
    if extensions.get("catalog") is not None:
        extensions["catalog"].warm_up()
    if extensions.get("observer") is not None:
        extensions["observer"].start()  # ships what workers gone before it left in the spool
    worker.ready_rss = _resident_bytes()
    worker.served = 0


def post_request(worker, req, environ, resp):
    """Recycle a worker whose memory grew past WORKER_MEMORY_GROWTH_MB since it was ready."""
    worker.served = getattr(worker, "served", 0) + 1
    limit = _config.worker_memory_growth_mb
    if not limit or worker.served % MEMORY_CHECK_EVERY or getattr(worker, "ready_rss", None) is None:
        return
    now = _resident_bytes()
    if now is None:
        return
    grown = (now - worker.ready_rss) / 2**20
    if grown > limit:
        worker.log.warning("worker memory grew past WORKER_MEMORY_GROWTH_MB; replacing it after this request",
                           extra={"pid": worker.pid, "grown_mb": round(grown, 1), "limit_mb": limit})
        worker.alive = False  # the worker loop ends after this request; the master starts another


def _resident_bytes():
    """This process's resident memory in bytes (None where /proc is not there: no memory recycling)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def when_ready(server):
    """The sockets are bound and no worker exists yet: check the listeners, then reset the metrics.

    Serving without API keys is allowed on loopback only, unless ALLOW_UNAUTHENTICATED says so.
    """
    _check_open_listeners(server)
    _check_unsigned_models(server)
    _warn_unbuffered_public_sync(server)
    _prepare_metrics(server)
    _hold_models(server)  # after the metrics folder is emptied: the explanation costs measured go there


def on_reload(server):
    """HUP: load the versions that appeared since, so the workers about to be forked share them too."""
    _hold_models(server)


def _hold_models(server):
    """Load every model version in the master, then freeze it out of the collector's reach (see ``on_starting``).

    The master stays one thread: ``preload.hold_all`` drops the sessions again if opening them
    started one. Nothing here can stop the server: a version that fails is the workers' to report.
    """
    from service import explain
    from service.monitoring.multiproc import multiprocess_dir
    from service.security.signing import model_keys
    from service.serving import preload
    from service.serving.runtime import BackendChoice

    try:
        held = preload.hold_all(_config.artifacts_dir, signing_key=model_keys(_config.signing_key, _config.trusted_keys),
                                backend=BackendChoice.parse(_config.model_backend, _config.model_backends),
                                prepare=explain.preparer(multiprocess_dir()))
    except Exception:  # e.g. an unreadable artifacts folder: every worker loads its own, as without this
        server.log.exception("model versions not loaded before fork; each worker loads its own")
        return
    gc.freeze()
    server.log.info("model versions loaded before fork", extra={"versions": held})


def _prepare_metrics(server):
    """Empty this instance's Prometheus multiprocess folder and hand it to the workers.

    Every worker writes its counters to files there and a scrape adds them up. By default
    the folder is in memory (/dev/shm, one per port and user), so a full disk cannot kill
    workers through it. It is emptied here, once the bind has succeeded: a second server
    started on a busy port exits before this point and leaves the running one's files alone.
    """
    from service.monitoring import metrics, multiproc

    folder = os.environ.get(multiproc.MULTIPROC_ENV) or multiproc.default_dir(_config.port)
    server.log.info("metrics folder ready", extra={"path": str(metrics.prepare_multiprocess_dir(folder))})


def _check_open_listeners(server):
    """Check the addresses Gunicorn really listens on (a --bind or GUNICORN_CMD_ARGS can differ from HOST)."""
    import ipaddress

    if _config.api_keys_file or _config.allow_unauthenticated:
        return
    for listener in server.LISTENERS:
        address = listener.sock.getsockname()
        host = address[0] if isinstance(address, tuple) else None  # a unix socket is local
        if host is not None and not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            server.log.error("refusing to serve without API keys on a non-loopback address; set API_KEYS_FILE "
                             "or ALLOW_UNAUTHENTICATED=1", extra={"address": str(listener)})
            sys.stderr.write(f"configuration error: listening on {listener} without API_KEYS_FILE; "
                             "set API_KEYS_FILE or ALLOW_UNAUTHENTICATED=1\n")
            os._exit(2)  # before any worker exists; nothing to clean up but the sockets


def _check_unsigned_models(server):
    """Anyone who can write artifacts/ runs code in a server that loads unsigned pickles: on a
    non-loopback listener that takes MODEL_TRUSTED_KEYS (or MODEL_SIGNING_KEY), or ALLOW_UNSIGNED_MODELS=1."""
    import ipaddress

    if _config.trusted_keys or _config.signing_key:
        return
    public = [str(listener) for listener in server.LISTENERS if isinstance(listener.sock.getsockname(), tuple)
              and not ipaddress.ip_address(listener.sock.getsockname()[0].split("%")[0]).is_loopback]
    if not public:
        return
    if _config.allow_unsigned_models:
        server.log.warning("serving models without signature verification on a non-loopback address "
                           "(ALLOW_UNSIGNED_MODELS=1)", extra={"address": ", ".join(public)})
        return
    server.log.error("refusing to serve unsigned models on a non-loopback address; set MODEL_TRUSTED_KEYS "
                     "or ALLOW_UNSIGNED_MODELS=1", extra={"address": ", ".join(public)})
    sys.stderr.write(f"configuration error: listening on {public[0]} without MODEL_TRUSTED_KEYS; "
                     "set MODEL_TRUSTED_KEYS (or MODEL_SIGNING_KEY) or ALLOW_UNSIGNED_MODELS=1\n")
    os._exit(2)


def _warn_unbuffered_public_sync(server):
    """Sync and plain gthread workers read a request in the process or thread that serves it: a
    few slow clients hold them all. With no proxy declared the worker class above buffers
    requests; a worker class forced another way (``--worker-class``, GUNICORN_CMD_ARGS) on a
    public address without a buffering proxy (Nginx, Apache, declared in FORWARDED_ALLOW_IPS)
    is warned about."""
    import ipaddress

    from gunicorn.workers.gthread import ThreadWorker
    from gunicorn.workers.sync import SyncWorker

    from service.buffering import BufferingWorker

    chosen = server.cfg.worker_class
    if _config.forwarded_allow_ips or issubclass(chosen, BufferingWorker) \
            or not issubclass(chosen, (SyncWorker, ThreadWorker)):
        return
    public = [str(listener) for listener in server.LISTENERS if isinstance(listener.sock.getsockname(), tuple)
              and not ipaddress.ip_address(listener.sock.getsockname()[0].split("%")[0]).is_loopback]
    if public:
        server.log.warning(f"{server.cfg.worker_class_str} workers on a public address with no proxy declared: slow "
                           "clients can stall every worker; put Nginx or Apache in front (deploy/) and set "
                           "FORWARDED_ALLOW_IPS to it, or leave the worker class to gunicorn.conf.py (it buffers "
                           "requests when no proxy is declared)", extra={"address": ", ".join(public)})


def child_exit(server, worker):
    """Drop a dead worker's live gauges and merge its counts, so restarts leave no stale series or pile of files."""
    from service.monitoring import metrics

    metrics.mark_worker_dead(worker.pid)


def worker_exit(server, worker):
    """A graceful stop (SIGTERM, HUP, max_requests, memory recycle): spool what the worker's recorder
    still holds, ship what the store takes, then stop the worker's loops and close its database.

    The wait is bounded so a dead database cannot hold the exit past the graceful timeout; what
    the store did not take stays in the spool on disk, and the next worker ships it.
    """
    from service.app import close_app

    app = getattr(worker, "wsgi", None)
    observer = getattr(app, "extensions", {}).get("observer")
    if observer is not None and not close_app(app, timeout=graceful_timeout / 2):
        recording = observer.recording()
        worker.log.warning("records left in the spool at exit; the next worker ships them",
                           extra={"spooled_bytes": recording.get("spooled_bytes"), "dropped": recording.get("dropped")})


def worker_abort(worker):
    """SIGABRT comes from the master after a timeout: leave a line saying which request hung."""
    worker.log.error("worker timed out and is being replaced", extra={"pid": worker.pid})

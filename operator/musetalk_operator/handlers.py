"""Kopf handlers: an Avatar's spec becomes a preprocessing Job; the Job's fate becomes its status.

Who writes `status.phase`: the Job and Pod watchers (`follow_job`, `follow_pod`) and, while the
Avatar is Pending, a timer that reads its Job again (`recheck_pending`), all through `follow`, for
the generation that Job was made for, and nothing else while a Job exists. `launch`
never writes Pending (that race, Pending landing over Running, is in docs/k8s-testing.md); it only
reports Failed for a generation that cannot get a Job at all. Every write is guarded by the Avatar's
generation, its current Job's name (a retry replaces the Job) and its resourceVersion, so a superseded
Job or a stale read cannot overwrite newer state. Each phase or reason change is also an Event on the
Avatar (Kopf's own posting is off: see `configure`).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import kopf

from . import jobs, kube, metrics, status, volume
from .config import GROUP, PLURAL, VERSION, OperatorConfig

__all__ = ["UPLOAD_ANNOTATION", "api_server_reachable", "clean_up", "configure", "follow_job", "follow_pod",
           "launch", "recheck_pending"]

# Set by the service on Avatars it created from an upload; the finalizer removes that file.
UPLOAD_ANNOTATION = f"{GROUP}/upload"
TERMINAL = (status.READY, status.FAILED)
STATUS_ATTEMPTS = 3  # re-read and recompute when the Avatar moved under us (409)
POD_WAIT_S = 5.0  # between checks while deletion waits for pods to stop
WAITING = "waiting for"  # how deletion's wait for pods begins its message
PROBE_TIMEOUT_S = 3.0  # /healthz's check of the API server
NORMAL, WARNING = "Normal", "Warning"
# How often a Pending Avatar's Job is read again. A Job whose pod the API server refuses changes
# nothing the watchers see; the Job controller's Event is the only record, and it is looked up here.
PENDING_RECHECK_S = 15.0
TIMER_EXIT_POLL_S = 1.0


class WaitIsNotAnError(logging.Filter):
    """Kopf logs every TemporaryError at ERROR, so a normal deletion wait would log an ERROR every
    few seconds. Deletion's own wait (only that) is lowered to INFO; real failures stay ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and f"failed temporarily: {WAITING} " in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class QuietRecheck(logging.Filter):
    """Kopf logs every timer run that succeeds: a line every PENDING_RECHECK_S for each Pending
    Avatar, saying nothing. They are dropped; what a recheck finds is logged by `publish`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timer 'recheck_pending")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    memo.cfg = OperatorConfig.from_env()
    # Events come from `record`, one per transition, on the Avatar. Kopf's own would be "Handler
    # succeeded" lines, and the Job watcher's would land on the Job rather than the Avatar.
    settings.posting.enabled = False
    # Namespaced Role RBAC is enough: no cluster-wide watching of namespaces and CRDs.
    settings.scanning.disabled = True
    settings.persistence.finalizer = f"{GROUP}/cleanup"
    # A timer (`recheck_pending`) caught mid-run when its Avatar is deleted is waited for, and Kopf
    # looks again only after this: its default of 60 s held a deleted Avatar that long.
    settings.background.cancellation_polling = TIMER_EXIT_POLL_S
    # Progress in annotations: the CRD's structural status schema would prune Kopf's status.kopf.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    objects = logging.getLogger("kopf.objects")  # the logger of Kopf's per-object messages
    for quieter in (WaitIsNotAnError, QuietRecheck):
        if not any(isinstance(f, quieter) for f in objects.filters):
            objects.addFilter(quieter())
    logger.info("preprocessing image %s, volume claim %s", memo.cfg.image, memo.cfg.pvc_name)


@kopf.on.probe(id="apiserver", errors=kopf.ErrorsMode.PERMANENT)
def api_server_reachable(**_: Any) -> str:
    """Part of /healthz: without it Kopf's liveness answers 200 while the API server is unreachable.
    Kopf caches the result for 10 s."""
    return kube.server_version(timeout_s=PROBE_TIMEOUT_S)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.update(GROUP, VERSION, PLURAL, field=("metadata", "annotations", jobs.RETRY_ANNOTATION))
def launch(body: kopf.Body, name: str, namespace: str, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    """Make sure exactly the Job the current generation and retry token call for exists.
    Idempotent: safe to re-run."""
    generation = int(body["metadata"].get("generation", 1))
    try:
        manifest = jobs.build_job(body, memo.cfg)
    except jobs.InvalidAvatar as e:
        outcome = status.Outcome(status.FAILED, "InvalidSpec", str(e))
        publish(namespace, name, generation, outcome, job_name="", cfg=memo.cfg, logger=logger)
        raise kopf.PermanentError(str(e)) from e
    wanted = manifest["metadata"]["name"]
    for old in kube.list_jobs(namespace, jobs.AVATAR_LABEL, name):
        if old["metadata"]["name"] != wanted:
            kube.delete_job(namespace, old["metadata"]["name"])
            logger.info("superseded job %s deleted", old["metadata"]["name"])
            record(body, NORMAL, "JobSuperseded", f"job {old['metadata']['name']} deleted: replaced by {wanted}",
                   memo.cfg, logger)
    try:
        created = kube.create_job(namespace, manifest)
    except kube.JobRefused as e:
        # The spec passed the CRD's schema but asks for a Job the API server refuses (a resource
        # request over its limit, a negative quantity): only a new spec can fix it, so no retry.
        message = f"the API server refuses the preprocessing Job: {e}"
        publish(namespace, name, generation, status.Outcome(status.FAILED, "InvalidSpec", message),
                job_name="", cfg=memo.cfg, logger=logger)
        raise kopf.PermanentError(message) from e
    if created:
        metrics.JOBS_STARTED.inc()
        logger.info("job %s created for generation %d", wanted, generation)
        record(body, NORMAL, "JobCreated", f"job {wanted} created for generation {generation}", memo.cfg, logger)
    else:
        logger.info("job %s already exists", wanted)


@kopf.on.event("batch", "v1", "jobs", labels={jobs.AVATAR_LABEL: kopf.PRESENT})
def follow_job(event: kopf.RawEvent, body: kopf.Body, name: str, namespace: str, labels: kopf.Labels,
               memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    """Map this Job's state onto its Avatar."""
    if event.get("type") == "DELETED":
        avatar_name, generation = _avatar_of(labels, name, logger), int(labels.get(jobs.GENERATION_LABEL, "0"))
        if avatar_name is None:
            return
        outcome = status.Outcome(status.FAILED, "JobDeleted", f"job {name} was deleted before it finished")
        publish(namespace, avatar_name, generation, outcome, job_name=name, cfg=memo.cfg, logger=logger,
                only_if_unfinished=True)
        return
    follow(body, namespace, memo.cfg, logger)


@kopf.on.event("", "v1", "pods", labels={jobs.AVATAR_LABEL: kopf.PRESENT, "job-name": kopf.PRESENT})
def follow_pod(labels: kopf.Labels, namespace: str, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    """A pod's phase moves without touching its Job's counts, so re-read the Job on pod news.

    On servers without the Job's `status.ready` (before 1.24), this is how Running is seen at all.
    """
    job = kube.get_job(namespace, labels["job-name"])
    if job is not None and not job["metadata"].get("deletionTimestamp"):
        follow(job, namespace, memo.cfg, logger)


@kopf.timer(GROUP, VERSION, PLURAL, field="status.phase", value=status.PENDING, interval=PENDING_RECHECK_S)
def recheck_pending(body: kopf.Body, namespace: str, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    """While an Avatar is Pending, its Job is read again, with its pods and, having none, its Events."""
    job_name = (body.get("status") or {}).get("jobName")
    job = kube.get_job(namespace, job_name) if job_name else None
    if job is not None and not job["metadata"].get("deletionTimestamp"):
        follow(job, namespace, memo.cfg, logger)


def _avatar_of(labels: Any, job_name: str, logger: logging.Logger) -> str | None:
    """The Avatar a Job names, checked: anyone who may create Jobs can set this label."""
    avatar_name = labels[jobs.AVATAR_LABEL]
    try:
        return jobs.avatar_id(avatar_name)
    except jobs.InvalidAvatar:
        logger.warning("job %s names an invalid avatar %r; ignored", job_name, avatar_name)
        return None


def follow(job: Any, namespace: str, cfg: OperatorConfig, logger: logging.Logger) -> None:
    """The one writer of status.phase: this Job's state, read with its pods, onto its Avatar."""
    labels, name = job["metadata"]["labels"], job["metadata"]["name"]
    avatar_name, generation = _avatar_of(labels, name, logger), int(labels.get(jobs.GENERATION_LABEL, "0"))
    if avatar_name is None:
        return
    pods = kube.list_pods(namespace, "job-name", name)
    outcome, info = status.job_outcome(job.get("status"), pods), dict[str, Any]()
    if outcome.phase in TERMINAL or outcome.reason == status.JOB_RETRYING:
        outcome, info = status.refine(outcome, status.pod_result(pods))
        if outcome.phase == status.READY and not {"frames", "engine"} <= info.keys():
            info = volume.stored_info(cfg.avatar_root, avatar_name) | info
    alive = any(not (p.get("metadata") or {}).get("deletionTimestamp") for p in pods)
    if outcome.reason == status.JOB_PENDING and not pods:
        outcome = status.creation_problem(job_events(namespace, name, logger)) or outcome
    if publish(namespace, avatar_name, generation, outcome, job_name=name, cfg=cfg, logger=logger, info=info,
               pod_alive=alive):
        count_finish(outcome, job.get("status") or {})


def job_events(namespace: str, job_name: str, logger: logging.Logger) -> list[dict[str, Any]]:
    """The Job's Events; none where the operator may not list them (a Role from before it needed
    to), which costs only the reason a refused pod would have been reported with."""
    try:
        return kube.job_events(namespace, job_name)
    except kube.ApiException as e:
        logger.warning("events of job %s not read: %s %s", job_name, e.status, e.reason)
        return []


def publish(namespace: str, name: str, generation: int, outcome: status.Outcome, *, job_name: str,
            cfg: OperatorConfig, logger: logging.Logger, info: dict[str, Any] | None = None,
            only_if_unfinished: bool = False, pod_alive: bool = True) -> bool:
    """Write the status if it comes from the Avatar's current Job and differs. True if written.

    `info` is the container's report (frames, engine) of a Ready avatar.
    """
    info = info or {}
    for _attempt in range(STATUS_ATTEMPTS):
        avatar = kube.get_avatar(namespace, name)
        if avatar is None or avatar["metadata"].get("deletionTimestamp"):
            return False
        if int(avatar["metadata"].get("generation", 1)) != generation:
            return False  # a superseded generation's Job: its news is stale
        if job_name and jobs.job_name_for(avatar) != job_name:
            return False  # a Job replaced by a retry: stale too
        current = avatar.get("status") or {}
        if only_if_unfinished and (current.get("phase") in TERMINAL or current.get("jobName") != job_name):
            return False
        if current.get("jobName") == job_name and current.get("phase") in TERMINAL and outcome.phase not in TERMINAL:
            return False  # a finished Job never starts again (a retry is a new Job): this news is older
        outcome = status.keep_cause(outcome, current, job_name, pod_alive=pod_alive)
        frames = info.get("frames")
        desired = status.avatar_status(outcome, generation=generation, job_name=job_name,
                                       frames=int(frames) if frames is not None else None,
                                       previous=current, now=_now(), engine=engine_of(avatar, info),
                                       serving=volume.is_stored(cfg.avatar_root, name))
        if all(current.get(key) == value for key, value in desired.items()):
            return False  # an unchanged re-delivery: nothing to do
        try:
            kube.patch_avatar_status(namespace, name, desired, avatar["metadata"]["resourceVersion"])
        except kube.ApiException as e:
            if e.status == 409:
                continue
            raise
        logger.info("avatar %s is %s: %s", name, outcome.phase, outcome.message)
        changed = current.get("phase") != outcome.phase or current.get("observedGeneration") != generation
        if changed or current.get("reason") != outcome.reason:  # e.g. Pending, now for want of a GPU
            kind = WARNING if outcome.phase == status.FAILED or status.is_problem(outcome) else NORMAL
            record(avatar, kind, outcome.reason, f"{outcome.phase}: {outcome.message}", cfg, logger)
        return changed
    raise kopf.TemporaryError(f"avatar {name} kept changing; status not written", delay=1)


def engine_of(avatar: dict[str, Any], info: dict[str, Any]) -> str | None:
    """The engine the avatar is (being) prepared with: named in the spec, or what `auto` chose."""
    if info.get("engine"):
        return str(info["engine"])
    spec_engine = (avatar.get("spec") or {}).get("engine", "auto")
    return None if spec_engine == "auto" else str(spec_engine)


def count_finish(outcome: status.Outcome, job_status: dict[str, Any]) -> None:
    if outcome.phase == status.READY:
        metrics.JOBS_SUCCEEDED.inc()
    elif outcome.phase == status.FAILED:
        metrics.JOBS_FAILED.inc()
    else:
        return
    # Kubernetes sets completionTime on success only; a failed Job (its backoff spent, its deadline
    # passed) ends when its Failed condition became true. Both are timed, an hour-long failure too.
    failed: dict[str, Any] = next((c for c in job_status.get("conditions") or [] if c.get("type") == "Failed"
                   and c.get("status") == "True"), {})
    start, end = job_status.get("startTime"), job_status.get("completionTime") or failed.get("lastTransitionTime")
    if start and end:
        finished = "succeeded" if outcome.phase == status.READY else "failed"
        metrics.JOB_SECONDS.labels(finished).observe((_parse(end) - _parse(start)).total_seconds())


def record(avatar: Any, event_type: str, reason: str, message: str, cfg: OperatorConfig,
           logger: logging.Logger) -> None:
    """An Event on the Avatar. Best effort: a refused Event is logged, never fails the handler."""
    if not cfg.post_events:
        return
    try:
        kube.post_event(avatar, event_type, reason, message)
    except kube.ApiException as e:
        logger.warning("event %s on avatar %s not posted: %s %s", reason, avatar["metadata"]["name"],
                       e.status, e.reason)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def clean_up(name: str, namespace: str, body: kopf.Body, annotations: kopf.Annotations,
             runtime: datetime.timedelta, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    """The finalizer: stop the Jobs, wait (boundedly) for their pods, then remove the files.

    Every Avatar can be deleted: this never needs the name to be a valid avatar id (1.20-1.24
    admit any DNS subdomain), and nothing here retries past `cleanup_wait_s`. After that it says
    what it could not do (log, Warning Event, status message) and lets the Avatar go.
    """
    waited, limit = runtime.total_seconds(), memo.cfg.cleanup_wait_s
    out_of_time = waited >= limit
    try:
        left_running = _clean_up(name, namespace, annotations, memo.cfg, logger, wait=not out_of_time)
    except Waiting as e:
        # Said in the status too, once: the columns would otherwise show a healthy phase while
        # `kubectl delete` hangs (a pod on a lost node stays Terminating until the limit).
        saying = f"deleting: {e} (at most {limit:.0f}s, then the files go anyway)"
        if ((body.get("status") or {}).get("message") or "") != saying:
            say_in_status(body, saying, logger)
        raise kopf.TemporaryError(str(e), delay=min(POD_WAIT_S, limit - waited)) from e
    except Exception as e:  # the API or the volume refused: retry, but only until the limit
        if not out_of_time:
            raise kopf.TemporaryError(f"cleanup failed, retrying: {e}", delay=min(POD_WAIT_S, limit - waited)) from e
        give_up(body, "CleanupFailed", f"gave up after {waited:.0f}s: {e}; whatever it left stays", memo.cfg, logger)
        return
    if left_running:
        give_up(body, "CleanupTimedOut", f"gave up after {waited:.0f}s {WAITING} preprocessing pod(s) "
                f"{', '.join(left_running)} to stop (a lost node?); removed the avatar's files anyway",
                memo.cfg, logger)


class Waiting(Exception):
    """Deletion waits for preprocessing pods to stop (normal, so logged at INFO: see configure)."""


def _clean_up(name: str, namespace: str, annotations: kopf.Annotations, cfg: OperatorConfig,
              logger: logging.Logger, *, wait: bool) -> list[str]:
    """Stop the Jobs and remove the files. Raises Waiting while pods run, if told to wait; else
    returns the pods it did not wait for."""
    running: list[str] = []
    removed = False
    try:
        avatar_name: str | None = jobs.avatar_id(name)
    except jobs.InvalidAvatar:
        avatar_name = None  # launch refused it (InvalidSpec): it never had a Job or files
    if avatar_name is not None:
        for job in kube.list_jobs(namespace, jobs.AVATAR_LABEL, avatar_name):
            kube.delete_job(namespace, job["metadata"]["name"])
        running = [p["metadata"]["name"] for p in kube.list_pods(namespace, jobs.AVATAR_LABEL, avatar_name)
                   if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        # A pod still alive could commit its staging folder after we cleaned; wait it out, but
        # not forever: a pod whose node is gone stays Terminating until someone force-deletes it.
        if running and wait:
            raise Waiting(f"{WAITING} preprocessing pod(s) {', '.join(running)} to stop")
        removed = volume.remove_avatar(cfg.avatar_root, avatar_name)
    upload = annotations.get(UPLOAD_ANNOTATION)
    if upload:
        volume.remove_upload(cfg.data_dir, upload)
    logger.info("avatar %s cleaned up (files removed: %s)", name, removed)
    return running


def give_up(avatar: Any, reason: str, message: str, cfg: OperatorConfig, logger: logging.Logger) -> None:
    """Deletion's last word on what it could not finish: best effort, never raises."""
    logger.warning("avatar %s: %s", avatar["metadata"]["name"], message)
    record(avatar, WARNING, reason, message, cfg, logger)
    say_in_status(avatar, message, logger)


def say_in_status(avatar: Any, message: str, logger: logging.Logger) -> None:
    """The Avatar's status message alone, its phase as it was (a deletion's news). Never raises."""
    meta = avatar["metadata"]
    try:
        kube.patch_avatar_message(meta["namespace"], meta["name"], message[:status.MAX_MESSAGE])
    except kube.ApiException as e:
        logger.warning("avatar %s: status message not written: %s %s", meta["name"], e.status, e.reason)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(stamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")

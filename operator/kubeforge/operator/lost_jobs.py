"""A step Job deleted before it finished: its resource fails, saying so.

Without this the resource would stay Running forever: the Job's DELETED event was ignored, and
nothing else looks at a resource whose Job is gone until the operator restarts (when it would
silently run the step again). A user who deletes a step Job (or a controller that evicts it)
stops that run; the resource says which Job went and how to run again.
"""

from __future__ import annotations

import logging
from typing import Any

from kubeforge.api.common import Phase, now_rfc3339
from kubeforge.operator import builders as b
from kubeforge.operator import status as st
from kubeforge.operator.reconcile import Context, owner_of_job, sync_from_job, write_status
from kubeforge.operator.refs import model_of

# Kinds whose step Job is the resource's one run; an InferenceService's older serve Jobs are
# deleted by the operator itself when a new serve run replaces them.
STEP_KINDS = ("DatasetVersion", "TrainingJob", "Benchmark")


def fail_for_deleted_job(ctx: Context, job: dict[str, Any], logger: logging.Logger) -> None:
    """Called with the last state of a deleted step Job."""
    owner = owner_of_job(ctx, job)
    if owner is None or owner["kind"] not in STEP_KINDS or owner["metadata"].get("deletionTimestamp"):
        return  # the owner is gone or going: the Job went with it (garbage collection)
    status = owner.get("status") or {}
    if status.get("phase") in (Phase.SUCCEEDED, Phase.FAILED):
        return  # finished: ttlSecondsAfterFinished or a user tidied up
    meta = owner["metadata"]
    others = [j for j in ctx.kube.list("batch/v1", "Job", meta["namespace"],
                                       {b.LABEL_KIND: owner["kind"], b.LABEL_NAME: meta["name"]})
              if j["metadata"]["uid"] != job["metadata"]["uid"] and not j["metadata"].get("deletionTimestamp")]
    if others:
        return  # not the resource's current run
    res = model_of(owner)
    if st.job_outcome(job).phase in (Phase.SUCCEEDED, Phase.FAILED):
        sync_from_job(ctx, owner, res, job, logger)  # it finished before it went: report that
        return
    name = job["metadata"]["name"]
    message = (f"the step Job {name} was deleted while the step was {status.get('phase') or 'Pending'}; its pod was "
               f"stopped and the run did not finish. Delete and re-create {owner['kind']} {meta['name']} to run it "
               "again")
    made_for = (job["metadata"].get("annotations") or {}).get(b.ANNOTATION_GENERATION)
    generation = int(made_for) if made_for and made_for.isdigit() else meta.get("generation")
    patch = st.status_patch(status, Phase.FAILED, st.JOB_DELETED, message, generation,
                            {"completionTime": now_rfc3339()})
    write_status(ctx, owner, patch, logger)

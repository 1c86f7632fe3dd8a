"""The words the service's API speaks, and where they differ from the model's, the mapping.

The API's words are public (JSON keys, ``outputs=`` values, Prometheus labels,
``Server-Timing`` entries), so where they differ from the names used elsewhere they are
kept, and the difference is written here once instead of at each place that meets it:

- A task is named in the singular (`scene_contract.model.TASKS`: ``instance``); what a
  client asks for with ``outputs=``, and the JSON key it comes back under, is the
  plural ``instances``: `OUTPUT_OF_TASK`.
- The stage in which a request waits for the micro-batcher is ``queue_wait`` as a
  ``stage`` label and a ``Server-Timing`` entry, and ``queue`` in the JSON
  ``timings_ms``: `TIMING_KEYS`.
"""

from __future__ import annotations

from scene_contract.model import DEPTH_TASK, INSTANCE_TASK, SEMANTIC_TASK, TASKS

SEMANTIC_OUTPUT = "semantic"
INSTANCES_OUTPUT = "instances"
DEPTH_OUTPUT = "depth"
# One output per task; the instance task's output is the instances it groups.
OUTPUT_OF_TASK: dict[str, str] = {
    SEMANTIC_TASK: SEMANTIC_OUTPUT,
    INSTANCE_TASK: INSTANCES_OUTPUT,
    DEPTH_TASK: DEPTH_OUTPUT,
}
OUTPUTS: tuple[str, ...] = tuple(OUTPUT_OF_TASK[task] for task in TASKS)

# The stages of a /predict request, in the order they run.
DECODE_STAGE = "decode"
PREPROCESS_STAGE = "preprocess"
QUEUE_WAIT_STAGE = "queue_wait"
INFERENCE_STAGE = "inference"
POSTPROCESS_STAGE = "postprocess"
ENCODE_STAGE = "encode"
STAGES: tuple[str, ...] = (
    DECODE_STAGE,
    PREPROCESS_STAGE,
    QUEUE_WAIT_STAGE,
    INFERENCE_STAGE,
    POSTPROCESS_STAGE,
    ENCODE_STAGE,
)
# Each stage's key in the JSON ``timings_ms``: its own name, except the queue's.
TIMING_KEYS: dict[str, str] = {stage: stage for stage in STAGES} | {QUEUE_WAIT_STAGE: "queue"}

"""The ONNX contract between export and service: tensor names, layouts and the model card.

An exported model has one input and four outputs (N images of H x W pixels):

=====================  =========  ================  ==============================================
name                   dtype      shape             meaning
=====================  =========  ================  ==============================================
``image``              uint8      [N, H, W, 3]      RGB; normalisation happens inside the graph
``semantic``           uint8      [N, H, W]         train id of the most likely class (argmax)
``semantic_confidence`` float32   [N, H, W]         softmax probability of that class
``instance_offsets``   float32    [N, 2, H, W]      pixels, (dy, dx) from each pixel to its
                                                    instance's centroid
``inverse_depth``      float32    [N, 1, H, W]      1/m; 0 = infinitely far (sky)
=====================  =========  ================  ==============================================

N is dynamic. H and W are dynamic too unless the card's ``input.fixed_size`` is true:
then the graph holds its resampling sizes as constants and is valid at exactly the
card's ``input.height`` x ``input.width``. Dynamic H and W should be multiples of
``spatial_multiple`` (the backbone's output stride) so features align with pixels. The
service resizes every image to the size recorded in the card, with the card's
``input.resize`` filter, so it serves both kinds alike.

The model card is JSON in the ONNX metadata under ``METADATA_KEY``: everything a
consumer needs to read the outputs (the class table and its colours, each task's σ,
the input size and how to resize to it); `scene_contract.card.ModelCard` writes and
reads it. This module needs only the standard library, so the service can import it
without torch or the training code.
"""

from __future__ import annotations

INPUT_NAME = "image"
SEMANTIC = "semantic"
SEMANTIC_CONFIDENCE = "semantic_confidence"
INSTANCE_OFFSETS = "instance_offsets"
INVERSE_DEPTH = "inverse_depth"
OUTPUT_NAMES: tuple[str, ...] = (SEMANTIC, SEMANTIC_CONFIDENCE, INSTANCE_OFFSETS, INVERSE_DEPTH)
# What each output holds, as the model card's ``outputs`` says it.
OUTPUT_DESCRIPTIONS: dict[str, str] = {
    SEMANTIC: "uint8 [N, H, W]: train id of the most likely class",
    SEMANTIC_CONFIDENCE: "float32 [N, H, W]: softmax probability of that class",
    INSTANCE_OFFSETS: "float32 [N, 2, H, W]: pixels, (dy, dx) from each pixel to its instance centroid",
    INVERSE_DEPTH: "float32 [N, 1, H, W]: 1/m, 0 = infinitely far (sky)",
}

METADATA_KEY = "scene_mtl.model_card"
CARD_SCHEMA = "scene-mtl/model-card-v1"
# The three tasks, in the order every per-task table follows.
SEMANTIC_TASK = "semantic"
INSTANCE_TASK = "instance"
DEPTH_TASK = "depth"
TASKS: tuple[str, ...] = (SEMANTIC_TASK, INSTANCE_TASK, DEPTH_TASK)
MAX_IR_VERSION = 10  # what every onnxruntime release since 1.16 loads
# Next to the model file, a folder of PNGs at the input size for people to try the model
# on (scene-export writes them; the service's demo page serves them).
SAMPLES_DIR = "samples"
# How images are brought to the card's input size, each filter named as Pillow names it
# (in lower case), so either side resizes with ``Image.Resampling[name.upper()]``. Cards
# written before the field existed were all trained on bilinear resizes.
BILINEAR = "bilinear"
NEAREST = "nearest"
RESIZE_FILTERS: tuple[str, ...] = (BILINEAR, NEAREST)
DEFAULT_RESIZE = BILINEAR

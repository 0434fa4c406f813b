"""RetinaNet, the detection task's model: KerasHub's `RetinaNetObjectDetector` over a small ResNet encoder (or
any KerasHub backbone preset), with anchors sized for the data's objects.

A whole detector, not a body for a head: its anchors, box matching, losses and decoding belong together, and
KerasHub keeps them. It takes any image size whose sides divide by 2**max_level (the feature pyramid adds
upsampled levels), so a detector trained on 128-pixel scenes runs on a 512-pixel picture as well. Pixels go in
unscaled (0-255): the encoder's first batch normalization absorbs the scale when training from scratch.

Measured before choosing (2-core CPU, 128x128 scenes of up to 12 digits): KerasHub's RetinaNet with this small
ResNet (64-64-128-256, one basic block per stage) and one 256-filter conv per head trains at about 27 images/s
on a lightly loaded machine (4.7M parameters); group normalization in the heads cut the box loss tenfold after
two epochs. The lab's figures are in conf/experiment/scenes_detector.yaml.
"""

from collections.abc import Sequence

import keras

from nnlab.errors import NnlabError
from nnlab.models import MODELS

BOX_FORMAT = "xyxy"  # absolute pixels, [x_min, y_min, x_max, y_max]: the loaders' rows


def keras_hub():
    try:
        import keras_hub
    except ImportError:
        raise NnlabError("model=retinanet needs KerasHub: pip install keras-hub (nnlab's `detection` extra).") from None
    return keras_hub


@MODELS.register("retinanet", inputs="images", task="detection", complete=True)
def retinanet(*, input_shape: Sequence[int], num_classes: int, encoder: str | None, filters: Sequence[int],
              blocks: Sequence[int], min_level: int, max_level: int, anchor_size: float, head_convs: int,
              head_norm: bool, max_detections: int, min_score: float, iou_threshold: float,
              weights: str | None) -> keras.Model:
    hub = keras_hub()
    if not min_level <= max_level:
        raise NnlabError(f"model.min_level={min_level} is above model.max_level={max_level}; the pyramid needs "
                         "min_level <= max_level.")
    side = 2**max_level
    if any(d is not None and d % side for d in input_shape[:2]):
        raise NnlabError(f"Images of {tuple(input_shape[:2])} pixels do not divide by 2**model.max_level={side}; "
                         f"resize them to a multiple of {side} (dataset.image_size) or lower model.max_level.")
    shape = (None, None, int(input_shape[-1]))
    image_encoder = (hub.models.Backbone.from_preset(encoder) if encoder
                     else small_resnet(hub, filters, blocks, shape))
    backbone = hub.models.RetinaNetBackbone(image_encoder=image_encoder, min_level=min_level, max_level=max_level,
                                            use_p5=False, image_shape=shape)
    anchors = hub.layers.AnchorGenerator(BOX_FORMAT, min_level=min_level, max_level=max_level, num_scales=3,
                                         aspect_ratios=[0.5, 1.0, 2.0], anchor_size=anchor_size)
    # Every true box also gets its best anchor, however low the overlap (torchvision's RetinaNet does the same:
    # allow_low_quality_matches): without it a thin digit such as a 1 matches no anchor at IoU 0.5 and is
    # never learnt; measured on scenes, 10% of the true boxes had no anchor at all.
    from keras_hub.src.models.retinanet.retinanet_label_encoder import RetinaNetLabelEncoder  # not exported

    encoder = RetinaNetLabelEncoder(
        anchors, bounding_box_format=BOX_FORMAT, encoding_format="center_xywh",
        box_matcher_force_match_for_each_col=True)
    model = hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=num_classes, bounding_box_format=BOX_FORMAT, anchor_generator=anchors,
        label_encoder=encoder, pre_logits_num_conv_layers=head_convs, use_prediction_head_norm=head_norm,
        prediction_decoder=decoder(max_detections=max_detections, min_score=min_score, iou_threshold=iou_threshold))
    if weights:
        model.load_weights(weights)
    return model


def small_resnet(hub, filters: Sequence[int], blocks: Sequence[int], shape) -> keras.Model:
    """KerasHub's ResNet with basic blocks, stage strides 1, 2, 2, …: pyramid levels P2 … P(len(filters)+1)."""
    if len(filters) != len(blocks):
        raise NnlabError(f"model.filters={list(filters)} and model.blocks={list(blocks)} need one entry per stage "
                         "each; give them the same length.")
    if filters[0] != 64:
        raise NnlabError(f"model.filters={list(filters)}: KerasHub's ResNet needs 64 filters in its first stage; "
                         "set model.filters[0]=64.")
    return hub.models.ResNetBackbone(
        input_conv_filters=[filters[0]], input_conv_kernel_sizes=[3], stackwise_num_filters=list(filters),
        stackwise_num_blocks=list(blocks), stackwise_num_strides=[1] + [2] * (len(filters) - 1),
        block_type="basic_block", use_pre_activation=False, image_shape=shape)


def decoder(*, max_detections: int, min_score: float, iou_threshold: float):
    """KerasHub's non-max suppression on the heads' logits."""
    return keras_hub().layers.NonMaxSuppression(bounding_box_format=BOX_FORMAT, from_logits=True,
                                                iou_threshold=iou_threshold, confidence_threshold=min_score,
                                                max_detections=max_detections)

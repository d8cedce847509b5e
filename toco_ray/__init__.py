"""toco-ray: ToCo (Token Contrast for WSSS, CVPR 2023) with Ray-distributed training, sweeps and inference.

The method code (``toco_ray.models``, ``toco_ray.losses``, ``toco_ray.cam``, ``toco_ray.par``, ``toco_ray.engine``,
``toco_ray.data``, ``toco_ray.metrics``) needs only torch and timm; the orchestration layers
(``toco_ray.distributed``, ``toco_ray.tuning``, ``toco_ray.inference``, ``toco_ray.tracking``) import Ray and MLflow.
"""

__version__ = "0.1.0"

"""Riemannian manifolds for flow matching: Euclidean, flat torus, sphere, SO(3) (unit quaternions), products.

Every manifold implements :class:`Manifold` (``exp``, ``log``, ``geodesic``, ``geodesic_with_velocity``,
``proju``, ``projx``, ``transport``, ``dist``, ``inner``, ``norm``, ``random_base``, ``origin``);
:mod:`~flowsci.manifolds.masks` handles variable-size sets, :func:`riemannian_mse` is the flow-matching loss
and :mod:`~flowsci.manifolds.quaternion` holds the rotation algebra.
"""

from flowsci.manifolds.base import Manifold
from flowsci.manifolds.euclidean import Euclidean
from flowsci.manifolds.igso3 import igso3_angle_density, sample_igso3
from flowsci.manifolds.loss import riemannian_mse
from flowsci.manifolds.masks import (
    center_of_mass,
    fill_padding,
    mask_tangent,
    masked_mean,
    remove_com,
    scatter_center_of_mass,
    scatter_remove_com,
)
from flowsci.manifolds.product import Product
from flowsci.manifolds.quaternion import (
    axis_angle_to_quaternion,
    matrix_to_quaternion,
    quaternion_apply,
    quaternion_canonical,
    quaternion_conjugate,
    quaternion_exp,
    quaternion_log,
    quaternion_multiply,
    quaternion_normalize,
    quaternion_slerp,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    quaternion_to_rotvec,
    random_quaternion,
    rotvec_to_quaternion,
)
from flowsci.manifolds.so3 import SO3
from flowsci.manifolds.sphere import Sphere
from flowsci.manifolds.torus import FlatTorus, wrap, wrap_diff

__all__ = [
    "igso3_angle_density",
    "sample_igso3",
    "SO3",
    "Euclidean",
    "FlatTorus",
    "Manifold",
    "Product",
    "Sphere",
    "axis_angle_to_quaternion",
    "center_of_mass",
    "fill_padding",
    "mask_tangent",
    "masked_mean",
    "matrix_to_quaternion",
    "quaternion_apply",
    "quaternion_canonical",
    "quaternion_conjugate",
    "quaternion_exp",
    "quaternion_log",
    "quaternion_multiply",
    "quaternion_normalize",
    "quaternion_slerp",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "quaternion_to_rotvec",
    "random_quaternion",
    "remove_com",
    "riemannian_mse",
    "rotvec_to_quaternion",
    "scatter_center_of_mass",
    "scatter_remove_com",
    "wrap",
    "wrap_diff",
]

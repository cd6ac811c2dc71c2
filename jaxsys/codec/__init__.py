"""codec system: batched rANS compression of weight tensors with a bit-exact, vmap-over-tiles JAX
decoder; `jaxsys.codec.params` is the API through which a model keeps its parameters compressed."""

from jaxsys.codec.decode import decode_group, decode_layer, decode_layer_async
from jaxsys.codec.errors import CodecError
from jaxsys.codec.format import decode_layer_numpy, decode_layer_reference, encode_layer, layer_info
from jaxsys.codec.group import decode_group_numpy, decode_group_reference, encode_group
from jaxsys.codec.quant import dequantize_int8, quantize_int8

__all__ = [
    "CodecError",
    "encode_layer",
    "decode_layer",
    "decode_layer_async",
    "decode_layer_numpy",
    "decode_layer_reference",
    "layer_info",
    "quantize_int8",
    "dequantize_int8",
    "encode_group",
    "decode_group",
    "decode_group_numpy",
    "decode_group_reference",
]

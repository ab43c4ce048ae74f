"""One parameter buffer with named views: the state-dict methods shared by Backbone and Model.

A subclass sets self._table ([(name, shape, offset, decay)] in buffer order), self._params and
self._grads (1-D float32 views of the native buffers) and self.config (printed in messages).
A model whose buffers are device memory (Model(device="cuda")) sets self._params and
self._grads to None: reads then take a host copy from self._native.params() / grads(), and
load_state_dict writes a host copy back with self._native.upload_params(). No NumPy array
ever views device memory.
"""
from collections import namedtuple

import numpy as np

LoadResult = namedtuple("LoadResult", ["missing_keys", "unexpected_keys", "ignored_keys"])


def _list_names(names, limit=12):
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names) - limit} more)" if len(names) > limit else "")


class ParameterBuffer:
    def parameter_names(self):
        return [name for name, _, _, _ in self._table]

    def num_parameters(self):
        return int(sum(int(np.prod(shape)) for _, shape, _, _ in self._table))

    def _view(self, buffer, offset, shape):
        n = int(np.prod(shape))
        return buffer[offset:offset + n].reshape(shape)

    def _host_params(self):
        """The whole parameter buffer in host memory: the native view, or a copy of device memory."""
        return self._params if self._params is not None else self._native.params()

    def _set_host_params(self, values):
        """Sets the whole parameter buffer from a flat float32 host array (a trainer's EMA):
        a copy into the native view, or one upload to device memory."""
        if self._params is not None:
            self._params[:] = values
        else:
            self._native.upload_params(values)

    def _host_grads(self):
        return self._grads if self._grads is not None else self._native.grads()

    def state_dict(self):
        """Parameters by timm name, as float32 copies."""
        values = self._host_params()
        return {name: self._view(values, off, shape).copy() for name, shape, off, _ in self._table}

    def grads(self):
        """Parameter gradients of the last backward, by timm name (copies)."""
        values = self._host_grads()
        return {name: self._view(values, off, shape).copy() for name, shape, off, _ in self._table}

    def load_state_dict(self, state, strict=True):
        """Copies `state` (name -> array) into the parameters.

        strict: missing or unexpected names raise ValueError listing them. Shape mismatches
        always raise. Everything is checked before anything is written, so a failed load
        leaves the parameters as they were. Returns LoadResult(missing, unexpected, ignored).
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict of name -> array, got {type(state).__name__}")
        expected = {name: (shape, off) for name, shape, off, _ in self._table}
        missing = [n for n in expected if n not in state]
        unexpected = [n for n in state if n not in expected]
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {_list_names(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {_list_names(unexpected)}")
        converted = {}
        bad_shapes = []
        for name, value in state.items():
            if name not in expected:
                continue
            arr = np.asarray(value)
            if arr.dtype.kind not in "fiu":
                raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
            shape = tuple(expected[name][0])
            if arr.shape != shape:
                bad_shapes.append(f"{name}: got {arr.shape}, expected {shape}")
                continue
            converted[name] = arr.astype(np.float32, copy=False)
        if bad_shapes:
            problems.append("mis-shaped: " + "; ".join(bad_shapes[:12]) +
                            (f" ... ({len(bad_shapes) - 12} more)" if len(bad_shapes) > 12 else ""))
        if problems:
            raise ValueError(f"cannot load state dict into {self.config}: " + " | ".join(problems))
        values = self._host_params()
        for name, arr in converted.items():
            shape, off = expected[name]
            self._view(values, off, shape)[...] = arr
        if self._params is None:  # device memory: the host copy goes back in one upload
            self._native.upload_params(values)
        return LoadResult(missing, unexpected, [])

"""Recurrent networks for sequences shaped (time, features), such as the airline windows."""

import keras

from nnlab.errors import NnlabError, unknown_name
from nnlab.models import MODELS, dense_block

CELLS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


def check(x, units, cell: str) -> None:
    if cell not in CELLS:
        raise NnlabError(unknown_name("recurrent cell", cell, CELLS))
    if not units:
        raise NnlabError("model.units is empty; list at least one recurrent layer size, e.g. units: [64].")
    if len(x.shape) != 3:
        raise NnlabError(f"model 'lstm' needs inputs shaped (time, features), but the data gives "
                         f"{tuple(x.shape[1:])}; use a sequence dataset such as airline, or another model.")


@MODELS.register("lstm", inputs="sequences")
def lstm(x, *, units: list[int], cell: str, bidirectional: bool,
         dropout: float, recurrent_dropout: float, dense: list[int], activation: str):
    """Stacked `cell` layers of `units` (optionally bidirectional), then `dense` layers; `dropout` applies to
    each recurrent layer's inputs and after each dense layer."""
    check(x, units, cell)
    for i, n in enumerate(units, start=1):
        # Only the last layer collapses time: the ones below feed it a whole sequence.
        layer = CELLS[cell](n, return_sequences=i < len(units), dropout=dropout,
                            recurrent_dropout=recurrent_dropout, name=f"{cell}{i}")
        x = keras.layers.Bidirectional(layer, name=f"bidirectional{i}")(x) if bidirectional else layer(x)
    for i, n in enumerate(dense, start=1):
        x = dense_block(x, n, activation=activation, batch_norm=False, dropout=dropout, name=f"dense{i}")
    return x

"""Keras 3 graphs the tf_keras bridge cannot rebuild: a functional graph with ``+``, ``*``, ``keras.ops.mean`` and a
reshape between layers once ended every command with ``KeyError: 'add'`` (exit 3); the bridge now names the node.
"""
from __future__ import annotations

import pytest

import user_models

pytestmark = pytest.mark.xdist_group("keras3_graphs")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("keras3_graphs")
    return {"ops": user_models.ops_graph(d)}


def test_the_bridge_names_the_op_node_instead_of_a_key_error(graphs):
    from models.keras3 import BridgeError, keras3, to_tf_keras

    model = keras3().saving.load_model(graphs["ops"][0])
    with pytest.raises(BridgeError, match=r"node '\w+' is a keras.ops Add call between layers \(1 of \d+ such"):
        to_tf_keras(model)

"""The two Kerases: Keras 3 files bridged to tf_keras (keras3) or served from their own traced function (native); models.backend decides the engine."""

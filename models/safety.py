"""Safe-mode checks that read a model file without loading it: pure functions that say why it is refused.

A model file from the user is untrusted: in safe mode nothing in it may run or read the host. The loader
(:mod:`models.loading`) calls these before Keras or TensorFlow sees the file; each returns the reason the
file is refused (one line, without the file's name) or None.

* :func:`savedmodel_refusal`: a SavedModel's graph may only hold compute ops. Its op types are read from
  ``saved_model.pb`` (every MetaGraphDef's top-level nodes and every function of its library) and checked
  against :data:`COMPUTE_OPS`, an allowlist: an op that touches the host (WriteFile, ReadFile, PyFunc, a
  dataset or summary writer, a table read from a text file...) is refused, and so is any op it does not
  know. The checkpoint ops SaveV2/RestoreV2/MergeV2Checkpoints are allowed only in the functions that the
  ``saver_def`` alone reaches (``__inference__traced_save/restore``, in every TF2 SavedModel): TensorFlow 2
  never runs those (it restores the variables from ``variables/`` with ops it builds itself), while the same
  ops in a function a signature or an object calls would write or read any checkpoint path on the host. A TF1
  SavedModel (no object graph), whose loader does run the saver's restore op, gets no such exemption.
* :func:`layer_refusal`: a layer config must not name a path on the host. Lookup layers (StringLookup,
  IntegerLookup, TextVectorization) read a string ``vocabulary`` as a file, and Keras 3's TFSMLayer loads the
  SavedModel at its ``filepath``; a config field that takes a file, or any field whose string looks like an
  absolute path, home directory, parent traversal or URL, is refused.
"""
from __future__ import annotations

import re
from pathlib import Path

SAFE_HINT = "--unsafe runs it, if you trust the file"

# ------------------------------------------------------------------------------------------------ SavedModel ops

#: Op types that compute on tensors and resources in memory: what tf_keras ``model.save`` (SavedModel),
#: ``tf.saved_model.save`` of a Keras model and Keras 3 ``model.export`` write for the zoo, the common Keras
#: layers and keras.applications, plus the usual math/array/control-flow ops a hand-written tf.Module uses.
#: Deliberately absent: anything that reads or writes files (ReadFile, WriteFile, MatchingFiles, Save*, Restore*,
#: InitializeTableFromTextFile*, ImmutableConst, readers, datasets, summary writers, PrintV2 and the Debug* ops,
#: which write to file:// streams, DecodeProto/EncodeProto, which may read a descriptor file), runs Python
#: (PyFunc, EagerPyFunc, PyFuncStateless), talks to other hosts (Send/Recv, collective and RPC ops) or is unknown.
COMPUTE_OPS = frozenset("""
    Abs Acos Acosh Add AddN AddV2 All Any ApproximateEqual ArgMax ArgMin Asin Asinh Assert AssignAddVariableOp
    AssignSubVariableOp AssignVariableOp Atan Atan2 Atanh AvgPool AvgPool3D BatchMatMul BatchMatMulV2 BatchMatMulV3
    BatchToSpaceND BiasAdd Bitcast BitwiseAnd BitwiseOr BitwiseXor BroadcastArgs BroadcastGradientArgs BroadcastTo
    Bucketize Case Cast Ceil CheckNumerics CheckNumericsV2 Cholesky ClipByValue Complex ComplexAbs Concat ConcatV2
    ConcatOffset Const Conj Conv Conv2D Conv2DBackpropFilter Conv2DBackpropInput Conv3D Conv3DBackpropInputV2
    Cos Cosh Cross Cumprod Cumsum CumulativeLogsumexp DepthToSpace DepthwiseConv2dNative
    DepthwiseConv2dNativeBackpropInput Diag DiagPart Digamma Dilation2D DisableCopyOnRead Div DivNoNan Einsum Elu
    EmptyTensorList EnsureShape Equal Erf Erfc Exp ExpandDims Expm1 ExtractImagePatches FFT FFT2D FFT3D Fill Floor
    FloorDiv FloorMod FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3 Gather GatherNd GatherV2 Greater GreaterEqual
    HashTableV2 Identity IdentityN If IFFT IFFT2D IFFT3D Imag InTopKV2 InvertPermutation IRFFT IsFinite IsInf IsNan
    IsVariableInitialized L2Loss LeakyRelu LeftShift Less LessEqual Lgamma LinSpace ListDiff Log Log1p LogicalAnd
    LogicalNot LogicalOr LogSoftmax LookupTableExportV2 LookupTableFindV2 LookupTableImportV2 LookupTableInsertV2
    LookupTableRemoveV2 LookupTableSizeV2 LRN MatMul MatrixBandPart MatrixDeterminant MatrixDiag MatrixDiagPart
    MatrixDiagPartV3 MatrixDiagV3 MatrixInverse MatrixSetDiag MatrixSetDiagV3 MatrixSolve MatrixTriangularSolve Max
    Maximum MaxPool MaxPool3D MaxPoolV2 MaxPoolWithArgmax Mean Min Minimum MirrorPad Mod Mul MulNoNan
    MutableDenseHashTableV2 MutableHashTableOfTensorsV2 MutableHashTableV2 Ndtri Neg NextAfter NoOp
    NonMaxSuppressionV3 NonMaxSuppressionV4 NonMaxSuppressionV5 NotEqual OneHot OnesLike Pack Pad PadV2
    PartitionedCall Placeholder PlaceholderWithDefault Pow PreventGradient Prod Qr RandomGamma RandomShuffle
    RandomStandardNormal RandomUniform RandomUniformInt Range Rank ReadVariableOp Real RealDiv Reciprocal
    Relu Relu6 Reshape ResizeArea ResizeBicubic ResizeBilinear ResizeNearestNeighbor
    ResourceGather ResourceGatherNd ResourceScatterAdd ResourceScatterUpdate Reverse ReverseSequence ReverseV2
    RFFT RFFT2D RFFT3D RightShift Rint RngReadAndSkip Round Rsqrt ScatterNd SegmentMax SegmentMean SegmentMin
    SegmentProd SegmentSum Select SelectV2 SelfAdjointEigV2 Selu Shape ShapeN Sigmoid Sign Sin Sinh Size Slice
    Snapshot Softmax Softplus Softsign SpaceToBatchND SpaceToDepth SparseFillEmptyRows SparseReshape
    SparseSegmentMean SparseSegmentSqrtN SparseSegmentSum SparseTensorDenseMatMul SparseToDense Split SplitV Sqrt
    Square SquaredDifference Squeeze StatefulPartitionedCall StatefulStandardNormalV2 StatefulUniform
    StatefulUniformFullInt StatefulUniformInt StatelessCase StatelessIf StatelessMultinomial
    StatelessRandomGetAlg StatelessRandomGetKeyCounter StatelessRandomNormal StatelessRandomNormalV2
    StatelessRandomUniform StatelessRandomUniformFullInt StatelessRandomUniformFullIntV2 StatelessRandomUniformInt
    StatelessRandomUniformIntV2 StatelessRandomUniformV2 StatelessTruncatedNormal StatelessTruncatedNormalV2
    StatelessWhile StopGradient StridedSlice StridedSliceGrad Sub Sum Svd Tan Tanh TensorListFromTensor
    TensorListGetItem TensorListLength TensorListReserve TensorListSetItem TensorListStack TensorScatterAdd
    TensorScatterMax TensorScatterMin TensorScatterSub TensorScatterUpdate Tile TopKV2 Transpose TruncateDiv
    TruncatedNormal TruncateMod Unique UniqueV2 Unpack UnsortedSegmentMax UnsortedSegmentMin UnsortedSegmentProd
    UnsortedSegmentSum VarHandleOp VarIsInitializedOp Where While Xdivy Xlog1py Xlogy ZerosLike Zeta
    AsString RegexFullMatch RegexReplace StaticRegexFullMatch StaticRegexReplace StringJoin StringLength
    StringLower StringSplitV2 StringStrip StringToHashBucketFast StringToNumber StringUpper Substr UnicodeDecode
    UnicodeDecodeWithOffsets UnicodeEncode UnicodeTranscode ReduceJoin ShardedFilename StringFormat
    RaggedTensorFromVariant RaggedTensorToSparse RaggedTensorToTensor RaggedTensorToVariant RaggedRange
    RaggedGather DenseBincount Bincount RaggedBincount SparseBincount SparseCross SparseCrossHashed
    SparseCrossV2 FakeQuantWithMinMaxArgs FakeQuantWithMinMaxVars FakeQuantWithMinMaxVarsPerChannel
    QuantizeAndDequantizeV2 QuantizeAndDequantizeV3 QuantizeAndDequantizeV4 CropAndResize AdjustContrastv2
    AdjustHue AdjustSaturation RGBToHSV HSVToRGB ImageProjectiveTransformV2 ImageProjectiveTransformV3
    CudnnRNN CudnnRNNV2 CudnnRNNV3 CudnnRNNBackprop CudnnRNNBackpropV2 CudnnRNNBackpropV3 BlockLSTM BlockLSTMV2
    GRUBlockCell LSTMBlockCell Multinomial
""".split())

#: The checkpoint ops of the saver's own functions (see the module docstring): allowed there only.
SAVER_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints"})

MAX_SAVED_MODEL_BYTES = 2 << 30  # protobuf's own limit


def _functions_called(node) -> set[str]:
    """Names of the functions a NodeDef calls through its attrs (``f``, ``body``, ``branches``...)."""
    names, stack = set(), list(node.attr.values())
    while stack:
        value = stack.pop()
        kind = value.WhichOneof("value")
        if kind == "func":
            names.add(value.func.name)
            stack.extend(value.func.attr.values())
        elif kind == "list":
            for func in value.list.func:
                names.add(func.name)
                stack.extend(func.attr.values())
    return names


def _closure(roots, calls: dict[str, set[str]]) -> set[str]:
    seen, stack = set(), [r for r in roots if r in calls]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(c for c in calls[name] if c in calls and c not in seen)
    return seen


def _meta_graph_refusals(meta) -> list[tuple[str, str]]:
    """(op type, where) of every op outside the allowlist in one MetaGraphDef."""
    library = {f.signature.name: f for f in meta.graph_def.library.function}
    calls = {name: {n.op for n in f.node_def if n.op in library}.union(*(_functions_called(n) for n in f.node_def))
             for name, f in library.items()}
    for grad in meta.graph_def.library.gradient:  # a gradient function runs when the function is differentiated
        if grad.function_name in calls:
            calls[grad.function_name].add(grad.gradient_func)
    saver = meta.saver_def
    saver_nodes = {t.split(":")[0].lstrip("^") for t in (saver.save_tensor_name, saver.restore_op_name) if t}
    has_objects = len(meta.object_graph_def.nodes) > 0  # TF2: the loader never runs the saver_def's graph
    top_saver, top_other = set(), set()
    for node in meta.graph_def.node:
        called = _functions_called(node) | ({node.op} if node.op in library else set())
        (top_saver if has_objects and node.name in saver_nodes else top_other).update(called)
    object_functions = set(meta.object_graph_def.concrete_functions)  # what TF2 restores as callables
    for obj in meta.object_graph_def.nodes:
        object_functions.update(obj.function.concrete_functions)
        object_functions.add(obj.bare_concrete_function.concrete_function_name)
    saver_reach = _closure(top_saver, calls)
    other_roots = top_other | object_functions | (set(library) - saver_reach)
    saver_only = saver_reach - _closure(other_roots, calls)
    found: dict[str, str] = {}

    def check(op: str, node_name: str, where: str, allowed) -> None:
        if op not in allowed and op not in library and op not in found:
            found[op] = f"node {node_name!r} {where}"

    for node in meta.graph_def.node:
        check(node.op, node.name, "of the graph", COMPUTE_OPS)
    for name in sorted(library):
        allowed = COMPUTE_OPS | SAVER_OPS if name in saver_only else COMPUTE_OPS
        for node in library[name].node_def:
            check(node.op, node.name, f"in function {name!r}", allowed)
    return list(found.items())


def savedmodel_refusal(path: str | Path) -> str | None:
    """Why safe mode refuses the SavedModel directory ``path`` (its graph holds ops that are not plain compute),
    or None. Reads ``saved_model.pb`` only: nothing is loaded, run or converted."""
    from tensorflow.core.protobuf import saved_model_pb2  # deferred: TensorFlow's protobuf classes (reading, not running, the graph)

    pb = Path(path) / "saved_model.pb"
    try:
        if not pb.is_file():  # a FIFO or a device would block or never end the read
            return "has a saved_model.pb that is not a regular file"
        if pb.stat().st_size > MAX_SAVED_MODEL_BYTES:
            return "has a saved_model.pb over 2 GiB, which TensorFlow cannot parse"
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString(pb.read_bytes())
    except Exception as e:  # unreadable or not a SavedModel: say so rather than let TensorFlow try it
        text = str(e).strip()
        cause = (text.splitlines()[0] if text else type(e).__name__)[:200]
        return f"has a saved_model.pb that cannot be read ({cause})"
    found: dict[str, str] = {}
    for meta in proto.meta_graphs:
        for op, where in _meta_graph_refusals(meta):
            found.setdefault(op, where)
    if not found:
        return None
    shown = "; ".join(f"{op} ({where})" for op, where in list(found.items())[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    return (f"holds op types that touch the host or are not known compute ops: {shown}{more}; refused in safe mode "
            f"because running or converting the graph would run them ({SAFE_HINT})")


# ------------------------------------------------------------------------------------------------ layer configs

#: config fields that Keras layers (and the tokenizers of libraries built on Keras) read as a file or directory
PATH_FIELDS = frozenset({"vocabulary", "idf_weights", "filepath", "file_path", "path", "filename", "vocabulary_file",
                         "vocab_file", "proto", "merges", "merges_file", "spm_model_file", "directory", "export_dir",
                         "handle", "module_handle"})
_PATHLIKE = re.compile(r"^(/|~|\\\\|[A-Za-z]:[\\/])|(^|[\\/])\.\.([\\/]|$)|^[A-Za-z][A-Za-z0-9+.-]*://")


def layer_refusal(node) -> str | None:
    """Why safe mode refuses one serialized object (``{"class_name": ..., "config": {...}}``) of a model config,
    or None: a field that names a file or directory on the host, which building the layer would read."""
    if not isinstance(node, dict) or not isinstance(node.get("config"), dict):
        return None
    config = node["config"]
    for key, value in config.items():
        if not isinstance(value, str) or not isinstance(key, str):
            continue
        if key in PATH_FIELDS or _PATHLIKE.search(value):
            layer = config.get("name")
            what = f"layer {layer!r} ({node.get('class_name')})" if isinstance(layer, str) else str(
                node.get("class_name"))
            return (f"names a path on this host in its config ({what}: {key}={value[:200]!r}); refused in safe mode "
                    "because building the layer would read it (--unsafe loads it, if you trust the file)")
    return None

"""Readers (and, for tests and demos, writers) of the official benchmark and dataset files.

A NAS researcher already has the benchmarks on disk in their official formats; zcfast reads
them without the benchmarks' own packages (TensorFlow, ``nas_201_api``, ``nats_bench``), and
never runs code from a data file (pickles go through :mod:`zcfast.safe_pickle`):

- :mod:`zcfast.formats.cache`: where converted tables live (``$ZCFAST_CACHE``, default
  ``~/.cache/zcfast``), the source fingerprint that keys them, :class:`ImportResult`;
- :mod:`zcfast.formats.tfrecord`: TFRecord framing (length + masked CRC-32C), streamed and checked;
- :mod:`zcfast.formats.nb101`: NAS-Bench-101's ``nasbench_only108.tfrecord`` /
  ``nasbench_full.tfrecord`` (JSON rows, base64 ``ModelMetrics`` protobuf) into a compact table;
- :mod:`zcfast.formats.nb201`: NAS-Bench-201 ``.pth`` (v1.0 / v1.1) and NATS-Bench topology files
  into the table format zcfast ships for NB201;
- :mod:`zcfast.formats.images`: torchvision's CIFAR-10 / CIFAR-100 python folders and the
  NAS-Bench-201 authors' ImageNet16 batches;
- :mod:`zcfast.formats.nb301`: NAS-Bench-301 surrogate ground truth (optional ``nasbench301``);
- :mod:`zcfast.formats.fixtures`: small files in each official format, from shipped data
  (``python -m zcfast.formats.fixtures DIR``), for tests and the docs' examples.

Layering: ``spaces`` and ``data`` import this package; it imports only ``zcfast.ops`` (the CRC
kernel), ``zcfast.safe_pickle`` and third-party packages, never a space or a command.
"""

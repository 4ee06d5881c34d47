"""Automatic engine choices: balanced chunks, explicit values win."""

from fedjax_med import engine, sharding


def test_auto_chunks_are_balanced_and_divide_devices():
  e = engine.choose(10, backend="cpu", num_devices=1)
  assert e.client_chunk_size == 1 and e.conv_impl == "im2col" and e.local_unroll == 1
  assert engine.choose(1, backend="cpu", num_devices=1).client_chunk_size is None
  e = engine.choose(1000, backend="cpu", num_devices=8)
  assert e.client_chunk_size == 8
  assert engine.choose(4096, backend="gpu", num_devices=1).client_chunk_size == 1024
  # 1100 clients at most 1024 a chunk run as 2 chunks of 550, not 1024 + 1024.
  assert engine.choose(1100, backend="gpu", num_devices=1).client_chunk_size == 550
  assert engine.choose(16, backend="gpu", num_devices=1).conv_impl == "native"


def test_explicit_values_win():
  e = engine.choose(64, client_chunk_size=1, conv_impl="native", local_unroll=5, backend="cpu",
                    num_devices=1)
  assert (e.client_chunk_size, e.conv_impl, e.local_unroll) == (1, "native", 5)
  assert engine.choose(64, client_chunk_size=64, backend="cpu", num_devices=1).client_chunk_size is None


def test_padding_for_mesh_and_chunk():
  mesh = sharding.make_mesh(1)
  e = engine.choose(10, backend="cpu", num_devices=1)
  assert sharding.pad_multiple(10, mesh, e.client_chunk_size) == 10
  e = engine.choose(1100, backend="gpu", num_devices=1)
  assert sharding.pad_multiple(1100, mesh, e.client_chunk_size) == 1100


def test_seeds_vectorize_on_accelerators_and_on_cpu_with_one_job():
  assert engine.vectorize_seeds("gpu", 2) and engine.vectorize_seeds("tpu")
  assert engine.vectorize_seeds("cpu", 1) and not engine.vectorize_seeds("cpu", 2)

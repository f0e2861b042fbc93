"""load_arrays keeps a split as .npz beside the prepared records and reads it back unchanged."""

import numpy as np

from jaxdl.data import sources


def test_second_load_reads_the_same_arrays_from_the_cache(mnist_data_dir, mnist_raw_dir):
    builder = sources.prepare("mnist", data_dir=str(mnist_data_dir), manual_dir=str(mnist_raw_dir.parent))
    first = sources.load_arrays(builder, "test", limit=300)
    path = sources._array_cache_path(builder, "test", 300)
    assert path is not None and path.exists()
    second = sources.load_arrays(builder, "test", limit=300)
    assert set(first) == set(second) == {"image", "label"}
    for key in first:
        assert second[key].dtype == first[key].dtype
        np.testing.assert_array_equal(second[key], first[key])
    other = sources.load_arrays(builder, "test", limit=7)  # another limit is another entry
    assert len(other["label"]) == 7
    np.testing.assert_array_equal(other["image"], first["image"][:7])


def test_an_unreadable_cache_file_is_ignored(mnist_data_dir, mnist_raw_dir):
    builder = sources.prepare("mnist", data_dir=str(mnist_data_dir), manual_dir=str(mnist_raw_dir.parent))
    expected = sources.load_arrays(builder, "test", limit=11)
    sources._array_cache_path(builder, "test", 11).write_bytes(b"not an npz")
    again = sources.load_arrays(builder, "test", limit=11)
    np.testing.assert_array_equal(again["image"], expected["image"])

import pytest
import torch

pytest.importorskip("trimesh", reason="the shapes extra is not installed: pip install 'flowsci[shapes]'")
pytest.importorskip("skimage", reason="the shapes extra is not installed: pip install 'flowsci[shapes]'")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

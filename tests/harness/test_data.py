import os

import pytest
import torch

from mlp import write_cifar10, write_imagefolder
from sweep.mlp.config import UserError
from sweep.mlp.data import Images, Loader, build_splits, channel_stats, load_dataset, split_train_val, stratified_pick


def test_stratified_pick_keeps_class_shares_and_depends_only_on_seed():
    y = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)
    idx = stratified_pick(y, 100, seed=3)
    assert len(idx) == len(set(idx.tolist())) == 100
    assert torch.bincount(y[idx]).tolist() == [60, 30, 10]
    assert torch.equal(idx, stratified_pick(y, 100, seed=3))
    assert not torch.equal(idx, stratified_pick(y, 100, seed=4))


def test_split_is_disjoint_and_complete():
    x = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1)
    train, val = split_train_val(Images(x, torch.arange(50) % 5), 0.2, seed=0)
    assert len(val.y) == 10 and len(train.y) == 40
    assert sorted(train.x.flatten().tolist() + val.x.flatten().tolist()) == list(range(50))


def test_val_size_must_leave_training_images():
    with pytest.raises(UserError, match="data.val_size"):
        split_train_val(Images(torch.zeros(10, 1, 1, 1, dtype=torch.uint8), torch.arange(10) % 2), 10, seed=0)


def test_cifar10_loader_reads_the_batch_format(make_cfg, tmp_path):
    write_cifar10(tmp_path / "c10", per_batch=20, test=30)
    cfg = make_cfg(f"data.root={tmp_path / 'c10'}", "data.download=false", "data.val_size=20")
    ds = load_dataset(cfg.data)
    assert ds.train.x.shape == (100, 3, 32, 32) and ds.train.x.dtype == torch.uint8
    assert ds.test.x.shape == (30, 3, 32, 32)
    assert ds.classes[0] == "airplane" and ds.train.y.tolist()[:10] == list(range(10))
    splits = build_splits(cfg.data, torch.device("cpu"))
    assert len(splits.val.y) == 20 and len(splits.train.y) == 80
    assert torch.bincount(splits.val.y).tolist() == [2] * 10  # stratified


@pytest.fixture
def serve_dir():
    """Serve a folder over HTTP on loopback, as CIFAR-10's host would."""
    import functools
    import http.server
    import threading

    servers = []

    def serve(folder):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()


def test_cifar10_download_fetches_and_extracts_the_archive(make_cfg, tmp_path, monkeypatch, serve_dir):
    import tarfile

    import torchvision

    src = write_cifar10(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from torchvision.datasets.utils import calculate_md5

    C = torchvision.datasets.CIFAR10
    monkeypatch.setattr(C, "url", f"{serve_dir(tmp_path)}/{archive.name}")
    monkeypatch.setattr(C, "tgz_md5", calculate_md5(str(archive)))
    folder = src / "cifar-10-batches-py"
    monkeypatch.setattr(C, "train_list", [[n, calculate_md5(str(folder / n))] for n, _ in C.train_list])
    monkeypatch.setattr(C, "test_list", [[n, calculate_md5(str(folder / n))] for n, _ in C.test_list])
    monkeypatch.setattr(C, "meta", {**C.meta, "md5": calculate_md5(str(folder / "batches.meta"))})
    cfg = make_cfg(f"data.root={tmp_path / 'fresh'}", "data.download=true")
    ds = load_dataset(cfg.data)
    assert (tmp_path / "fresh" / "cifar-10-batches-py" / "data_batch_5").exists()
    assert len(ds.train.y) == 100


def test_cifar10_missing_without_download_says_how_to_go_on(make_cfg, tmp_path):
    cfg = make_cfg(f"data.root={tmp_path / 'none'}", "data.download=false")
    with pytest.raises(UserError, match="data=digits"):
        load_dataset(cfg.data)


def test_imagefolder_decodes_once_and_cache_follows_the_files(make_cfg, tmp_path):
    root = write_imagefolder(tmp_path / "imgs", test_per_class=2)
    cfg = make_cfg("data=imagefolder", f"data.root={root}")
    ds = load_dataset(cfg.data)
    assert ds.classes == ["cat", "dog", "frog"]
    assert ds.train.x.shape == (36, 3, 8, 8) and ds.test.x.shape == (6, 3, 8, 8)
    assert torch.bincount(ds.train.y).tolist() == [12, 12, 12]
    caches = list((tmp_path / "cache").iterdir())
    assert len(caches) == 1
    assert torch.equal(load_dataset(cfg.data).train.x, ds.train.x)  # from the cache
    assert len(list((tmp_path / "cache").iterdir())) == 1
    (root / "train" / "cat" / "000.png").unlink()  # a changed source makes a new cache entry
    assert load_dataset(cfg.data).train.x.shape[0] == 35
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_imagefolder_names_a_corrupt_image(make_cfg, tmp_path):
    root = write_imagefolder(tmp_path / "imgs")
    bad = root / "train" / "dog" / "005.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(UserError, match="005.png"):
        load_dataset(make_cfg("data=imagefolder", f"data.root={root}").data)


def test_imagefolder_rejects_an_empty_class_and_a_missing_root(make_cfg, tmp_path):
    root = write_imagefolder(tmp_path / "imgs")
    os.makedirs(root / "train" / "empty")
    with pytest.raises(UserError, match="empty"):
        load_dataset(make_cfg("data=imagefolder", f"data.root={root}").data)
    with pytest.raises(UserError, match="data.root"):
        load_dataset(make_cfg("data=imagefolder", f"data.root={tmp_path / 'missing'}").data)


def test_channel_stats_match_the_float_mean_and_std_and_unit_is_the_tutorials():
    x = torch.randint(0, 256, (50, 3, 6, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x[:, 2] = 7  # a flat channel: its std is clamped above zero
    flat = x.transpose(0, 1).reshape(3, -1).double() / 255
    mean, std = channel_stats(x, "channel")
    assert torch.allclose(mean.double(), flat.mean(1), atol=1e-6)
    assert torch.allclose(std[:2].double(), flat.std(1)[:2], atol=1e-6) and 0 < std[2] <= 1e-6
    assert all(torch.equal(t, torch.full((3,), 0.5)) for t in channel_stats(x, "unit"))


def test_batches_are_normalized_and_augmented_as_whole_tensors():
    x = torch.randint(0, 256, (64, 3, 6, 6), dtype=torch.uint8)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    plain = Loader(Images(x, torch.arange(64)), torch.device("cpu"), mean, std, batch_size=64)
    (xb, yb), = list(plain.batches())
    expected = (x.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(xb, expected, atol=1e-5)

    flip = Loader(Images(x, torch.arange(64)), torch.device("cpu"), mean, std, batch_size=64, flip=True)
    (fb, fy), = list(flip.batches(torch.Generator().manual_seed(0), augment=True))
    same = [torch.allclose(fb[i], expected[fy[i]], atol=1e-5) for i in range(64)]
    mirrored = [torch.allclose(fb[i], expected[fy[i]].flip(2), atol=1e-5) for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored)) and 10 < sum(mirrored) < 54

    crop = Loader(Images(x, torch.arange(64)), torch.device("cpu"), mean, std, batch_size=64, crop_padding=2)
    (cb, cy), = list(crop.batches(torch.Generator().manual_seed(0), augment=True))
    assert cb.shape == xb.shape
    # Every crop is one of the (2p+1)^2 windows of the zero-padded image, and the windows vary.
    import torch.nn.functional as F

    shifts = []
    for i in range(64):
        padded = F.pad(expected[cy[i]], (2, 2, 2, 2))
        match = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.allclose(padded[:, dy:dy + 6, dx:dx + 6], cb[i], atol=1e-5)]
        assert match, f"crop {i} is not a window of its padded image"
        shifts.append(match[0])
    assert len(set(shifts)) > 5


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong keys"])
def test_a_damaged_cache_is_rebuilt_with_a_warning_naming_it(make_cfg, tmp_path, caplog, damage):
    root = write_imagefolder(tmp_path / "imgs")
    cfg = make_cfg("data=imagefolder", f"data.root={root}")
    first = load_dataset(cfg.data)
    (cache,) = (tmp_path / "cache").glob("*.pt")
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    elif damage == "garbage":
        cache.write_bytes(os.urandom(4096))
    else:
        torch.save({"train_x": torch.zeros(3), "classes": ["a"]}, cache)
    again = load_dataset(cfg.data)
    assert torch.equal(again.train.x, first.train.x)
    assert str(cache) in caplog.text and "damaged" in caplog.text
    assert torch.equal(load_dataset(cfg.data).train.x, first.train.x)  # the rebuilt cache reads cleanly
    assert not [p for p in (tmp_path / "cache").iterdir() if ".tmp" in p.name]  # no half-written files left


def test_cache_dir_that_is_a_file_is_named(make_cfg, tmp_path):
    root = write_imagefolder(tmp_path / "imgs")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="data.cache_dir=.*is a file"):
        load_dataset(make_cfg("data=imagefolder", f"data.root={root}", f"data.cache_dir={tmp_path / 'afile'}").data)


def test_a_dangling_link_in_an_image_folder_is_named(make_cfg, tmp_path):
    root = write_imagefolder(tmp_path / "imgs")
    (root / "train" / "cat" / "ghost.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(UserError, match="ghost.png is a broken link"):
        load_dataset(make_cfg("data=imagefolder", f"data.root={root}").data)


def test_sixteen_bit_pngs_decode_to_eight_bits(make_cfg, tmp_path):
    import numpy as np
    from PIL import Image

    root = write_imagefolder(tmp_path / "imgs")
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024)  # 16-bit grey
    Image.fromarray(deep).save(root / "train" / "dog" / "deep.png")
    ds = load_dataset(make_cfg("data=imagefolder", f"data.root={root}").data)
    assert ds.train.x.dtype == torch.uint8 and len(ds.train.y) == 37
    idx = sorted(p.name for p in (root / "train" / "dog").iterdir()).index("deep.png") + 12  # cats come first
    assert ds.train.x[idx, 0].flatten().tolist() == [(v * 1024) >> 8 for v in range(64)]


def test_cifar_files_are_read_without_running_what_a_pickle_asks_for(make_cfg, tmp_path):
    """A data root can be named by a checkpoint or a config: its pickles may carry code. None of it runs."""
    import pickle

    root = write_cifar10(tmp_path / "c10")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(root / "cifar-10-batches-py" / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["a"] * 10, "x": Payload()}, f)
    with pytest.raises(UserError, match="batches.meta is not a CIFAR-10 python file.*posix.system|system"):
        load_dataset(make_cfg(f"data.root={root}", "data.download=false").data)
    assert not marker.exists()

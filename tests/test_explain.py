import pytest

import deeparch
from deeparch.errors import ShapeError, UnknownLayerError


def test_alexnet_q1_to_q4_as_the_slides():
    ex = deeparch.explain("alexnet", layer=["conv1", "pool1"])
    text = ex.text()
    assert "(227 - 11 + 2*0)/4 + 1 = 55  ->  55x55x96" in text                 # Q1
    assert "params:  96 x (11 x 11 x 3) + 96 = 34,944" in text                # Q2
    assert "(55 - 3 + 2*0)/2 + 1 = 27  ->  27x27x96" in text                   # Q3
    assert "params:  0 (pooling has no weights)" in text                      # Q4
    assert "receptive field:  1 + (11 - 1) x 1 = 11;  jump 1 x 4 = 4" in text


def test_flooring_division_is_flagged():
    ex = deeparch.explain("alexnet", input_size=(3, 224, 224), layer="conv1")
    assert any("54.25 is not whole" in f and "never used" in f for f in ex.flags)


def test_stride_larger_than_kernel_is_flagged():
    ex = deeparch.explain("INPUT(16x16x3) -> CONV1-8(s=2) -> GAP -> FC-2")
    assert any("stride 2 is larger than the kernel 1" in f for f in ex.flags)


def test_seed_total_that_disagrees_with_its_rows_is_reported_exactly():
    ex = deeparch.explain("vgg16")
    memory = [n for n in ex.notes if "24M" in n][0]
    assert "15,237,608" in memory and "exact sum of its rows" in memory
    assert any("138M" in n and "agrees" in n for n in ex.notes)
    assert "weights 138,344,128 + biases 13,416" in ex.text()


def test_alexnet_sixty_million_is_flagged():
    ex = deeparch.explain("alexnet")
    assert any("60M" in n and "62,378,344" in n for n in ex.notes)


def test_kernel_larger_than_input_shows_the_arithmetic_and_raises():
    with pytest.raises(ShapeError) as info:
        deeparch.explain("alexnet", input_size=(3, 8, 8))
    ex = info.value.explanation
    assert "(8 - 11 + 2*0)/4 + 1 = 0.25 < 1" in ex.text()
    assert any("larger than the padded input" in f for f in ex.flags)


def test_unknown_layer():
    with pytest.raises(UnknownLayerError, match="no layer 'conv9'"):
        deeparch.explain("alexnet", layer="conv9")


def test_whole_model_explanation_covers_every_row():
    ex = deeparch.explain("lenet5")
    assert len(ex.layers) == len(deeparch.summary("lenet5").layers)
    assert "params:  6 x (5 x 5 x 1) + 6 = 156" in ex.text()
    assert "params:  84 x 10 + 10 = 850" in ex.text()


def test_published_totals_are_quoted_with_their_own_source():
    """VGG-16's card says 'torchvision ...; paper: 138M': 138M is the parameter count, so it
    belongs on the parameters line only, not under the mult-adds."""
    ex = deeparch.explain("vgg16")
    params = [n for n in ex.notes if n.startswith("published parameters")][0]
    macs = [n for n in ex.notes if n.startswith("published mult-adds")][0]
    assert "paper: 138M" in params and "138M" not in macs
    assert "torchvision reference implementation" in macs


@pytest.mark.parametrize("source,params,macs,want_p,want_m", [
    ("torchvision reference implementation: 7,978,856 parameters, 2.83 GFLOPS",
     7_978_856, 2_834_161_664, "torchvision reference implementation: 7,978,856 parameters",
     "torchvision reference implementation: 2.83 GFLOPS"),
    ("params: torchvision num_params (exact); mult-adds: torchvision 0.386 GFLOPS at 224 "
     "(rounded); paper Table 2: 5.3M, 0.39B", 5_288_548, 386_000_000,
     "torchvision num_params (exact); paper Table 2: 5.3M",
     "torchvision 0.386 GFLOPS at 224 (rounded); paper Table 2: 0.39B"),
    ("torchvision reference implementation (num_params exact; GFLOPS = conv + fc mult-adds): "
     "1.814 GFLOPS (the paper's Table 1 counts the stride on the 1x1)", 11_689_512,
     1_814_073_344, "torchvision reference implementation (num_params exact; GFLOPS = conv + "
     "fc mult-adds)", "torchvision reference implementation (num_params exact; GFLOPS = conv "
     "+ fc mult-adds): 1.814 GFLOPS (the paper's Table 1 counts the stride on the 1x1)"),
    ("crash course's layer-by-layer counts (156 + 2,416); mult-adds: 28*28*6*25 + 84*10",
     61_706, 416_520, "crash course's layer-by-layer counts (156 + 2,416)",
     "28*28*6*25 + 84*10"),
])
def test_source_is_split_by_quantity(source, params, macs, want_p, want_m):
    from deeparch.inspect.explain import source_by_quantity
    assert source_by_quantity(source, params, macs) == {"params": want_p, "macs": want_m}


def test_rows_after_the_dense_layers_see_the_whole_input():
    ex = deeparch.explain("vgg16", layer=["fc8", "block5.pool"])
    text = ex.text()
    assert "receptive field:  the whole input (224x224)" in text.split("fc8")[1]
    assert "= 212;  jump 16 x 2 = 32" in text

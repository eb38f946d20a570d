"""The confusion matrix picture keeps its whole title, however few the classes."""
import numpy as np
import pytest

from deeparch.viz.plots import confusion_figure, plot_confusion

LONG = ("fashion_cnn on fashion_mnist, 60 epochs, augmented: test confusion matrix "
        "(accuracy 91.68%)")


@pytest.mark.parametrize("k", [2, 3, 10, 100])
@pytest.mark.parametrize("title", [LONG, "lenet5 on digits: test confusion matrix (accuracy 99.44%)",
                                   None])
def test_the_title_lies_inside_the_figure(k, title):
    cm = np.eye(k, dtype=int) * 5 + 1
    fig = confusion_figure(cm, [f"class{i}" for i in range(k)], title=title)
    shown = fig.axes[0].title
    box = shown.get_window_extent(fig.canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width, (box, fig.bbox)
    assert 0 <= box.y0 and box.y1 <= fig.bbox.height, (box, fig.bbox)
    expected = title or f"confusion matrix (accuracy 100.00%, {int(cm.sum())} samples)"
    if title is None:
        expected = expected.replace("100.00%", f"{np.trace(cm) / cm.sum():.2%}")
    assert shown.get_text().split() == expected.split()  # wrapped, not cut
    # the axes (the matrix) stay below the title
    assert fig.axes[0].get_window_extent().y1 <= box.y0 + 1


def test_a_short_title_stays_on_one_line(tmp_path):
    fig = confusion_figure([[3, 1], [0, 4]], ["cat", "dog"], title="cats and dogs")
    assert fig.axes[0].title.get_text() == "cats and dogs"
    png = plot_confusion([[3, 1], [0, 4]], ["cat", "dog"], tmp_path / "cm.png", title=LONG)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

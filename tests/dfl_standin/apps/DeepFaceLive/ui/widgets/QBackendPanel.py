"""Stand-in for DFL's module panel, headless: the label that shows a module's ``_profile_timing``."""


class QXLabel:
    """What DFL's Qt label offers the panel: text and colour."""

    def __init__(self):
        self.text = None
        self.color = None

    def setText(self, text):  # noqa: N802 - Qt's name
        self.text = text

    def set_color(self, color):
        self.color = color


class QBackendPanel:
    def __init__(self, name):
        self._name = name
        self._fps_label = QXLabel()

    def _on_backend_profile_timing(self, timing):
        fps = int(1.0 / timing if timing != 0 else 0)
        self._fps_label.set_color("red" if fps < 10 else None)
        self._fps_label.setText("%d FPS" % fps)

"""Dataset formats beyond COCO and ImageFolder (VOC, YOLO, Supervisely), and every exporter."""

"""Zoo models over tabular, graph, multimodal and control inputs."""

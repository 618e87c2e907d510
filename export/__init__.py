"""ortserve export: turn Hugging Face text classifiers into validated ONNX artifacts (`pip install 'ortserve[export]'`)."""

import inspect

import noise_search


def test_pack_imports_without_comfyui_and_declares_v3_entrypoint():
    assert inspect.iscoroutinefunction(noise_search.comfy_entrypoint)
    assert noise_search.WEB_DIRECTORY == "./web"

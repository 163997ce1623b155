from fake_trtllm_core import update_llm_args_with_extra_dict

__all__ = ["update_llm_args_with_extra_dict"]

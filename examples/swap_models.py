"""One chain, two chat models: ChatPerplexityLabs and any other LangChain chat model are interchangeable."""

from _offline import labs_server, parse_args
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_pplx_labs import ChatPerplexityLabs

prompt = ChatPromptTemplate.from_template("In one sentence: {question}")


def run(llm: BaseChatModel) -> str:
    return (prompt | llm | StrOutputParser()).invoke({"question": "What is the capital of France?"})


args = parse_args(__doc__)
# Any chat model fits here, e.g. ChatOpenAI(model="gpt-4o-mini"); a fake one keeps this offline.
other = FakeListChatModel(responses=["Paris is the capital of France."])
with labs_server(args.base_url) as url, ChatPerplexityLabs(model=args.model, base_url=url) as labs:
    for name, llm in (("ChatPerplexityLabs", labs), ("FakeListChatModel", other)):
        print(f"{name}: {run(llm)}")

"""An LCEL chain: prompt | ChatPerplexityLabs | parser, run on a batch of topics."""

from _offline import labs_server, parse_args
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_pplx_labs import ChatPerplexityLabs

args = parse_args(__doc__)
prompt = ChatPromptTemplate.from_messages(
    [("system", "Answer in two sentences and cite sources."), ("human", "Explain {topic}.")]
)
with labs_server(args.base_url) as url, ChatPerplexityLabs(model=args.model, base_url=url) as llm:
    chain = prompt | llm | StrOutputParser()
    topics = ["Socket.IO", "LangChain"]
    answers = chain.batch([{"topic": topic} for topic in topics])
for topic, answer in zip(topics, answers, strict=True):
    print(f"{topic}: {answer}")

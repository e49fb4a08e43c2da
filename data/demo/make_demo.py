#!/usr/bin/env python3
"""Writes data/demo/products.csv (UTF-8) and products_cp949.csv (the first 80 rows in
cp949) from the hand-written product list below. Our own data: fictional bank, insurance,
card and securities products, each described five ways (Korean product copy, Korean
customer question, a Korean "when to use" line, English copy, English question), so that
a description is a query and its product's columns are the relevant documents.

Deterministic: no randomness; rerun with `python3 data/demo/make_demo.py`.
"""
import csv
import os

HERE = os.path.dirname(os.path.abspath(__file__))
COLUMNS = ["설명", "분류", "대분류", "중분류", "표제어", "영문", "도메인"]

# (도메인, 분류, 대분류, 중분류, 표제어, 영문, what-ko (noun phrase), need-ko (verb phrase),
#  detail-ko, what-en, detail-en)
P = [
    ("은행", "수신상품", "예금", "정기예금", "스마트정기예금", "Smart Fixed Deposit",
     "목돈을 1년 동안 맡기고 확정 금리를 받는 예금", "여유 자금을 안전하게 굴리고 싶다",
     "가입 기간은 6개월에서 36개월까지 고를 수 있고 만기 전 해지 시 중도해지 이율이 적용됩니다.",
     "a deposit that locks a lump sum for a fixed term at a guaranteed rate",
     "Terms run from 6 to 36 months; early withdrawal earns the lower early-termination rate."),
    ("은행", "수신상품", "예금", "정기예금", "회전식정기예금", "Rolling Rate Deposit",
     "3개월마다 금리가 새로 정해지는 회전식 예금", "금리 상승기에 예금 금리를 따라가고 싶다",
     "회전 주기마다 시장 금리로 이율이 바뀌며 회전 주기 이후에는 불이익 없이 해지할 수 있습니다.",
     "a deposit whose rate resets every three months",
     "The rate follows the market at each reset, and you can close it after any reset without penalty."),
    ("은행", "수신상품", "예금", "적금", "청년희망적금", "Youth Hope Savings",
     "만 19세에서 34세 청년이 매달 저축하면 저축장려금을 더해 주는 적금", "사회초년생으로 매달 조금씩 목돈을 모으고 싶다",
     "월 최대 50만 원까지 납입할 수 있고 만기까지 유지하면 정부 장려금과 비과세 혜택을 받습니다.",
     "monthly savings for young adults aged 19 to 34 with a government bonus",
     "Pay in up to 500,000 won a month; keeping it to maturity adds the bonus and tax-free interest."),
    ("은행", "수신상품", "예금", "적금", "자유적립적금", "Flexible Installment Savings",
     "원하는 날짜에 원하는 금액을 자유롭게 넣는 적금", "수입이 일정하지 않아 납입액을 바꾸며 저축하고 싶다",
     "1회 1천 원부터 납입할 수 있고 자동이체를 등록하면 우대 금리 0.2%p를 더 받습니다.",
     "installment savings where you deposit any amount on any day",
     "Deposits start at 1,000 won, and an automatic transfer adds a 0.2 point preferential rate."),
    ("은행", "수신상품", "예금", "입출금통장", "급여통장", "Salary Account",
     "월급이 들어오는 입출금 통장", "월급 계좌로 수수료 혜택을 받고 싶다",
     "급여 이체 실적이 있으면 타행 이체와 ATM 수수료가 매월 면제됩니다.",
     "a checking account for your monthly salary",
     "With a salary deposit each month, transfers to other banks and ATM withdrawals are free."),
    ("은행", "수신상품", "예금", "입출금통장", "파킹통장", "Parking Account",
     "하루만 맡겨도 이자가 붙는 수시입출금 통장", "잠깐 쉬는 돈에도 이자를 받고 싶다",
     "잔액 1억 원까지 연 2%대 금리를 매일 계산해 매월 지급하며 입출금이 자유롭습니다.",
     "a demand account that pays interest even on money parked for a day",
     "Balances up to 100 million won earn about 2% a year, computed daily and paid monthly."),
    ("은행", "수신상품", "예금", "청약", "주택청약종합저축", "Housing Subscription Savings",
     "아파트 청약 자격을 얻기 위해 매달 넣는 저축", "새 아파트 분양에 청약하고 싶다",
     "매월 2만 원에서 50만 원까지 납입하며 납입 횟수와 금액이 청약 순위와 가점에 반영됩니다.",
     "savings that qualify you to apply for new apartments",
     "Pay 20,000 to 500,000 won monthly; the number and size of payments count toward priority."),
    ("은행", "여신상품", "대출", "주택담보대출", "아파트담보대출", "Apartment Mortgage Loan",
     "아파트를 담보로 집값의 일부를 빌리는 대출", "집을 사면서 부족한 자금을 빌리고 싶다",
     "최장 40년 원리금균등분할상환이 가능하고 고정금리와 변동금리 중 선택할 수 있습니다.",
     "a loan secured by an apartment to finance a home purchase",
     "Repay in equal installments over up to 40 years at a fixed or variable rate."),
    ("은행", "여신상품", "대출", "주택담보대출", "보금자리론", "Bogeumjari Loan",
     "무주택 서민에게 장기 고정금리로 주택 구입 자금을 빌려주는 정책 모기지", "첫 집을 고정금리로 장기간 갚고 싶다",
     "부부 합산 연소득 7천만 원 이하이면 신청할 수 있고 만기까지 금리가 바뀌지 않습니다.",
     "a government-backed long-term fixed-rate mortgage for first-time buyers",
     "Households earning up to 70 million won a year qualify, and the rate never changes."),
    ("은행", "여신상품", "대출", "전세자금대출", "청년전세대출", "Youth Jeonse Loan",
     "청년이 전세 보증금을 마련하도록 저금리로 빌려주는 대출", "전세 보증금이 모자라 돈을 빌리고 싶다",
     "보증금의 80%까지 최대 2억 원을 빌릴 수 있고 임대차 계약서와 확정일자가 필요합니다.",
     "a low-rate loan that helps young tenants pay a jeonse deposit",
     "Borrow up to 80% of the deposit, at most 200 million won, with a dated lease contract."),
    ("은행", "여신상품", "대출", "신용대출", "직장인신용대출", "Employee Credit Loan",
     "담보 없이 소득과 신용으로 받는 직장인 대출", "담보 없이 급하게 목돈이 필요하다",
     "재직 1년 이상 직장인은 연소득의 최대 1.5배까지 모바일로 10분 안에 받을 수 있습니다.",
     "an unsecured loan for salaried workers based on income and credit",
     "Employees with a year on the job can borrow up to 1.5 times their income in ten minutes."),
    ("은행", "여신상품", "대출", "신용대출", "마이너스통장", "Overdraft Line",
     "한도 안에서 필요할 때 꺼내 쓰고 쓴 만큼만 이자를 내는 대출", "필요할 때마다 돈을 빌렸다 갚았다 하고 싶다",
     "약정 한도 안에서 자유롭게 인출하고 실제 사용 금액과 기간에 대해서만 이자가 붙습니다.",
     "a credit line you draw on as needed, paying interest only on what you use",
     "Withdraw freely up to the limit; interest accrues only on the amount and days used."),
    ("은행", "여신상품", "대출", "사업자대출", "소상공인운전자금대출", "Small Business Working Capital Loan",
     "가게 운영에 필요한 운전자금을 빌려주는 소상공인 대출", "가게 재료비와 인건비가 부족하다",
     "사업자등록 후 6개월이 지난 개인사업자가 신용보증서를 담보로 최대 1억 원까지 빌릴 수 있습니다.",
     "a working-capital loan for small shop owners",
     "Sole proprietors registered for six months can borrow up to 100 million won with a credit guarantee."),
    ("은행", "외환서비스", "외환", "환전", "모바일환전", "Mobile Currency Exchange",
     "앱에서 미리 환전을 신청하고 공항이나 영업점에서 외화를 찾는 서비스", "해외여행 전에 달러를 싸게 바꾸고 싶다",
     "주요 통화는 환율 우대 90%가 적용되고 신청 후 30일 안에 원하는 지점에서 수령합니다.",
     "currency exchange ordered in the app and picked up at the airport or a branch",
     "Major currencies get a 90% rate discount; collect the cash at any branch within 30 days."),
    ("은행", "외환서비스", "외환", "해외송금", "해외송금", "Overseas Remittance",
     "해외에 있는 가족이나 거래처에 돈을 보내는 서비스", "유학 중인 자녀에게 생활비를 보내고 싶다",
     "SWIFT 송금은 1~3영업일, 특급 송금은 수 분 안에 도착하며 연간 10만 달러까지 증빙 없이 보낼 수 있습니다.",
     "a service for sending money to family or partners abroad",
     "SWIFT transfers arrive in 1 to 3 business days, express transfers in minutes."),
    ("은행", "외환서비스", "외환", "외화예금", "외화정기예금", "Foreign Currency Time Deposit",
     "달러나 유로 같은 외화로 맡기는 정기예금", "달러를 원화로 바꾸지 않고 이자를 받고 싶다",
     "USD, EUR, JPY 등 10개 통화로 가입할 수 있고 예금자보호 대상입니다.",
     "a time deposit held in dollars, euros or other currencies",
     "Open it in one of ten currencies such as USD, EUR or JPY; it is covered by deposit insurance."),
    ("보험", "보장성보험", "생명보험", "종신보험", "든든종신보험", "Whole Life Insurance",
     "평생 동안 사망을 보장해 유가족에게 보험금을 주는 보험", "내가 없어도 가족의 생활비를 남기고 싶다",
     "사망 원인과 시기에 관계없이 가입 금액을 지급하며 납입 기간은 10년, 20년 중 고를 수 있습니다.",
     "lifelong death cover that pays your family a benefit",
     "The sum insured is paid whatever the cause or time of death; premiums run 10 or 20 years."),
    ("보험", "보장성보험", "생명보험", "정기보험", "가장정기보험", "Term Life Insurance",
     "정해진 기간에만 사망을 보장하는 저렴한 보험", "아이들이 독립할 때까지만 사망 보장을 크게 받고 싶다",
     "보험료가 종신보험의 5분의 1 수준이며 60세나 70세 만기를 선택합니다.",
     "low-cost death cover for a fixed period",
     "Premiums are about a fifth of whole life; cover ends at age 60 or 70."),
    ("보험", "보장성보험", "건강보험", "암보험", "첫날부터암보험", "Cancer Insurance",
     "암 진단을 받으면 진단금을 한 번에 주는 보험", "암에 걸렸을 때 치료비와 생활비가 걱정된다",
     "일반암 진단 시 최대 5천만 원을 지급하며 가입 후 90일의 면책 기간이 있습니다.",
     "insurance that pays a lump sum on a cancer diagnosis",
     "Pays up to 50 million won on diagnosis after a 90-day waiting period."),
    ("보험", "보장성보험", "건강보험", "실손보험", "실손의료보험", "Indemnity Medical Insurance",
     "병원에서 실제로 낸 의료비를 돌려주는 보험", "병원비 영수증을 내고 돌려받고 싶다",
     "입원과 통원 치료비의 자기부담금을 뺀 금액을 보상하며 앱으로 영수증을 찍어 청구합니다.",
     "insurance that reimburses the medical bills you actually paid",
     "Covers inpatient and outpatient costs above the deductible; claim by photographing the receipt."),
    ("보험", "보장성보험", "건강보험", "치아보험", "튼튼치아보험", "Dental Insurance",
     "임플란트와 크라운 같은 치과 치료비를 보장하는 보험", "임플란트 치료비가 부담된다",
     "임플란트 1개당 최대 150만 원, 크라운 50만 원을 보장하며 1년 이후 보장 금액이 100%가 됩니다.",
     "insurance for implants, crowns and other dental work",
     "Pays up to 1.5 million won per implant; full benefits start after the first year."),
    ("보험", "손해보험", "자동차보험", "개인용자동차보험", "다이렉트자동차보험", "Direct Auto Insurance",
     "설계사 없이 온라인으로 가입해 보험료가 싼 자동차보험", "자동차보험료를 줄이고 싶다",
     "대인, 대물, 자기차량 손해를 보장하고 주행거리가 짧으면 마일리지 할인을 추가로 받습니다.",
     "car insurance bought online without an agent at a lower premium",
     "Covers injury, property and own-vehicle damage, with a discount for low mileage."),
    ("보험", "손해보험", "자동차보험", "운전자보험", "운전자상해보험", "Driver Injury Insurance",
     "교통사고로 생기는 벌금과 형사 합의금을 보장하는 보험", "사고가 나서 형사 처벌을 받을까 걱정된다",
     "교통사고 처리 지원금, 벌금, 변호사 선임 비용을 보장하며 월 1만 원대로 가입합니다.",
     "insurance for fines and criminal settlements after a traffic accident",
     "Covers settlement support, fines and lawyer fees from about 10,000 won a month."),
    ("보험", "손해보험", "재물보험", "화재보험", "주택화재보험", "Home Fire Insurance",
     "화재로 집과 가재도구가 불에 탔을 때 보상하는 보험", "아파트에 불이 나서 이웃 집까지 피해를 줄까 걱정된다",
     "건물과 가재도구 손해는 물론 이웃에게 입힌 손해를 배상하는 특약을 붙일 수 있습니다.",
     "insurance that pays when fire damages your home and belongings",
     "Covers the building and contents, with an option for damage caused to neighbours."),
    ("보험", "손해보험", "여행보험", "해외여행보험", "해외여행자보험", "Travel Insurance",
     "해외여행 중 아프거나 짐을 잃어버렸을 때 보장하는 보험", "해외에서 병원에 가면 병원비가 너무 비싸다",
     "해외 의료비, 휴대품 손해, 항공기 지연 비용을 보장하고 출국 당일에도 앱으로 가입됩니다.",
     "cover for illness or lost luggage while travelling abroad",
     "Pays foreign medical bills, lost items and flight delays; buy it in the app on departure day."),
    ("보험", "저축성보험", "연금보험", "연금저축보험", "행복연금저축보험", "Pension Savings Insurance",
     "노후에 연금으로 받으면서 세액공제도 받는 연금보험", "노후 자금을 모으면서 연말정산 혜택을 받고 싶다",
     "연간 600만 원까지 납입액의 13.2%를 세액공제 받고 55세 이후 연금으로 나눠 받습니다.",
     "pension insurance with a tax credit that pays an annuity in retirement",
     "Up to 6 million won a year earns a 13.2% tax credit; the annuity starts after age 55."),
    ("보험", "저축성보험", "연금보험", "변액연금", "글로벌변액연금", "Variable Annuity",
     "보험료를 펀드에 투자해 운용 성과에 따라 연금액이 달라지는 보험", "물가 상승보다 높은 수익으로 연금을 키우고 싶다",
     "주식형과 채권형 펀드 비중을 연 12회까지 바꿀 수 있고 납입 원금은 최저 보증됩니다.",
     "an annuity whose premiums are invested in funds, so payouts follow performance",
     "Switch between equity and bond funds up to 12 times a year; paid-in premiums are guaranteed."),
    ("카드", "신용카드", "신용카드", "할인카드", "생활할인카드", "Everyday Discount Card",
     "마트, 통신비, 대중교통을 할인해 주는 신용카드", "매달 나가는 생활비를 아끼고 싶다",
     "전월 실적 30만 원 이상이면 대형마트 5%, 통신요금 10%, 대중교통 10%를 할인합니다.",
     "a credit card with discounts on groceries, phone bills and transit",
     "Spend 300,000 won the previous month to get 5% at supermarkets and 10% on phone and transit."),
    ("카드", "신용카드", "신용카드", "포인트카드", "적립플러스카드", "Points Plus Card",
     "쓸 때마다 포인트가 쌓이고 현금처럼 쓰는 신용카드", "실적 조건 없이 포인트를 모으고 싶다",
     "모든 가맹점에서 0.7%, 온라인 쇼핑은 1.5%가 적립되며 1포인트는 1원으로 씁니다.",
     "a credit card that earns points usable like cash on every purchase",
     "Earn 0.7% everywhere and 1.5% online with no spending threshold; one point is one won."),
    ("카드", "신용카드", "신용카드", "항공마일리지카드", "스카이마일카드", "Sky Miles Card",
     "결제 금액에 따라 항공 마일리지를 쌓아 주는 신용카드", "해외여행 항공권을 마일리지로 사고 싶다",
     "1천 원당 1.5마일을 적립하고 연 2회 공항 라운지를 무료로 이용합니다.",
     "a credit card that earns airline miles",
     "Earn 1.5 miles per 1,000 won and two free airport lounge visits a year."),
    ("카드", "체크카드", "체크카드", "체크카드", "알뜰체크카드", "Thrifty Debit Card",
     "통장 잔액 안에서만 결제되는 체크카드", "신용카드 없이 쓴 만큼만 결제하고 싶다",
     "커피, 편의점, 배달앱 결제 시 10% 캐시백을 주고 소득공제율이 신용카드보다 높습니다.",
     "a debit card that spends only what is in your account",
     "10% cashback at cafes, convenience stores and delivery apps, with a higher income deduction."),
    ("카드", "체크카드", "체크카드", "청소년카드", "틴즈체크카드", "Teens Debit Card",
     "만 12세 이상 청소년이 쓰는 교통 겸용 체크카드", "중학생 자녀에게 용돈 카드를 만들어 주고 싶다",
     "후불 교통 기능은 없고 선불 교통 충전과 편의점, 서점 할인을 제공합니다.",
     "a debit and transit card for teenagers from age 12",
     "Prepaid transit, discounts at convenience stores and bookshops; parents see every payment."),
    ("카드", "카드서비스", "카드서비스", "카드론", "장기카드대출", "Card Loan",
     "신용카드 회원이 한도 안에서 받는 장기 대출", "카드사에서 급하게 돈을 빌리고 싶다",
     "최대 36개월 분할 상환하며 금리는 신용점수에 따라 연 5.9%~19.9%입니다.",
     "a long-term loan for credit card members within a set limit",
     "Repay over up to 36 months at 5.9% to 19.9% a year depending on your credit score."),
    ("카드", "카드서비스", "카드서비스", "할부", "무이자할부", "Interest-free Installments",
     "가전이나 가구를 살 때 이자 없이 나눠 내는 할부 서비스", "큰 금액을 한 번에 내기 부담스럽다",
     "백화점, 가전, 온라인몰에서 2~6개월 무이자 할부를 제공하며 행사 가맹점은 매월 바뀝니다.",
     "paying for appliances or furniture in instalments without interest",
     "2 to 6 interest-free months at department stores, electronics and online shops."),
    ("증권", "금융투자", "투자상품", "펀드", "글로벌인덱스펀드", "Global Index Fund",
     "전 세계 주식 지수를 따라가는 저비용 펀드", "적은 돈으로 전 세계 주식에 분산 투자하고 싶다",
     "연 보수 0.2%로 선진국과 신흥국 주식 2천여 종목에 투자하며 매일 환매할 수 있습니다.",
     "a low-cost fund that tracks global stock indexes",
     "A 0.2% annual fee buys about 2,000 stocks in developed and emerging markets."),
    ("증권", "금융투자", "투자상품", "ETF", "국내ETF", "Domestic ETF",
     "주식처럼 실시간으로 사고파는 상장지수펀드", "주식 계좌로 지수에 투자하고 싶다",
     "코스피200, 반도체, 배당 ETF 등을 1주 단위로 매매하며 매매 수수료만 냅니다.",
     "exchange-traded funds bought and sold like stocks",
     "Trade KOSPI 200, semiconductor or dividend ETFs one share at a time."),
    ("증권", "금융투자", "투자상품", "채권", "국고채", "Government Bond",
     "국가가 발행해 원금과 이자를 보장하는 채권", "예금보다 조금 높은 이자를 안정적으로 받고 싶다",
     "3년, 10년, 30년 만기 국고채를 1만 원 단위로 사고 만기 전에도 장내에서 팔 수 있습니다.",
     "bonds issued by the state that pay fixed interest",
     "Buy 3, 10 or 30-year bonds in 10,000 won units and sell them on the exchange before maturity."),
    ("증권", "금융투자", "투자상품", "ELS", "지수연계증권", "Equity-linked Security",
     "주가지수가 일정 범위에 있으면 약정 수익을 주는 파생결합증권", "조건이 맞으면 연 6% 정도 수익을 받고 싶다",
     "6개월마다 조기상환을 평가하며 지수가 크게 떨어지면 원금 손실이 날 수 있습니다.",
     "a structured note that pays a set return while an index stays in range",
     "Early redemption is checked every six months; a sharp index fall can cost principal."),
    ("증권", "금융투자", "계좌", "ISA", "중개형ISA", "Brokerage ISA",
     "주식, ETF, 펀드를 한 계좌에 담고 비과세 혜택을 받는 종합자산관리계좌", "투자 수익에 세금을 덜 내고 싶다",
     "3년 이상 유지하면 수익 200만 원까지 비과세, 초과분은 9.9% 분리과세됩니다.",
     "an individual savings account holding stocks, ETFs and funds with tax relief",
     "Keep it three years: the first 2 million won of gains are tax-free, the rest taxed at 9.9%."),
    ("증권", "금융투자", "계좌", "해외주식", "해외주식계좌", "Overseas Stock Account",
     "미국 등 해외 주식을 원화로 바로 사는 계좌", "미국 주식을 사고 싶다",
     "원화 주문 시 자동 환전되고 소수점 단위로도 살 수 있으며 양도차익 250만 원까지 공제됩니다.",
     "an account for buying US and other foreign stocks in won",
     "Orders in won convert automatically, fractional shares allowed."),
    ("증권", "연금상품", "연금", "연금저축펀드", "연금저축펀드", "Pension Savings Fund",
     "펀드와 ETF로 운용하는 세액공제 연금 계좌", "노후 준비를 하면서 직접 ETF를 고르고 싶다",
     "연 600만 원까지 세액공제를 받고 55세 이후 연금으로 받으면 낮은 연금소득세가 붙습니다.",
     "a tax-credit pension account invested in funds and ETFs",
     "Up to 6 million won a year earns a tax credit; withdrawals after 55 are taxed lightly."),
    ("증권", "연금상품", "연금", "IRP", "개인형퇴직연금", "Individual Retirement Pension",
     "퇴직금을 받아 두고 노후까지 굴리는 개인형 퇴직연금 계좌", "회사를 옮기면서 받은 퇴직금을 보관하고 싶다",
     "연금저축과 합쳐 연 900만 원까지 세액공제를 받고 퇴직금은 연금으로 받을 때 퇴직소득세가 줄어듭니다.",
     "an individual retirement account for severance pay and pension savings",
     "Together with pension savings, up to 9 million won a year earns a tax credit."),
    ("증권", "연금상품", "연금", "ISA연금전환", "ISA만기연금전환", "ISA to Pension Transfer",
     "만기된 ISA 자금을 연금 계좌로 옮겨 추가 세액공제를 받는 제도", "ISA 만기 자금을 노후 자금으로 돌리고 싶다",
     "만기 후 60일 안에 옮기면 이전 금액의 10%, 최대 300만 원을 추가로 세액공제 받습니다.",
     "moving a matured ISA into a pension account for an extra tax credit",
     "Transfer within 60 days of maturity to deduct 10% of the amount, up to 3 million won."),
]

KO_Q = ["{need}, 어떤 상품이 좋을까요?", "{need}. {name} 가입 조건이 어떻게 되나요?", "{need}면 무엇을 알아봐야 하나요?"]
KO_WHEN = ["{what}이 필요하신 분께 {name}을 권해 드립니다.", "{name}: {what}. 영업점과 앱에서 가입할 수 있습니다."]
EN_Q = ["Which product is {what_en}?", "I need {what_en}; what do you offer?", "Do you have {what_en}?"]


def rows():
    out = []
    for i, (dom, cat, major, minor, name, en, what, need, detail, what_en, detail_en) in enumerate(P):
        out.append([f"{what}입니다. {detail}", cat, major, minor, name, en, dom])
        out.append([KO_Q[i % 3].format(need=need, name=name), cat, major, minor, name, en, dom])
        out.append([KO_WHEN[i % 2].format(what=what, name=name), cat, major, minor, name, en, dom])
        out.append([f"{name} ({en}) is {what_en}. {detail_en}", cat, major, minor, name, en, dom])
        out.append([EN_Q[i % 3].format(what_en=what_en), cat, major, minor, name, en, dom])
    # Messy rows as real tables have them: an empty description (skipped), a missing
    # English name, padding spaces, a numeric-looking code kept as text.
    out.append(["", "수신상품", "예금", "정기예금", "스마트정기예금", "Smart Fixed Deposit", "은행"])
    out.append(["  만기가 되면 자동으로 같은 기간 다시 예치되는 예금입니다.  ", "수신상품", "예금", "정기예금", "자동재예치예금", "", "은행"])
    out.append(["상품코드 007번 적금은 판매가 중단되었습니다.", "수신상품", "예금", "적금", "007적금", "Savings 007", "은행"])
    return out


def main():
    data = rows()
    with open(os.path.join(HERE, "products.csv"), "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(data)
    with open(os.path.join(HERE, "products_cp949.csv"), "w", encoding="cp949", newline="") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(COLUMNS)
        w.writerows(data[:80])
    print(f"wrote {len(data)} rows to products.csv and 80 to products_cp949.csv")


if __name__ == "__main__":
    main()

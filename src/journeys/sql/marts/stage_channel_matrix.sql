-- model: stage_channel_matrix
-- grain: stage_model, stage_index, channel
-- materialized: table
-- partition: none
-- publish: true
-- params: cost_channels, cost_per_contact, customer_value
-- One row per (stage model, stage, channel): where each stage actually happens, against the channels
-- designed for it, how many customers move on from there, how likely a journey in the cell is to buy and
-- what the cell is worth: customers x P(purchase) x average customer value - contacts x cost per contact.
with

-- Three narrow reads of int_map_events rather than one CTE read three times: a CTE read more than once is
-- materialized first, a copy of every event of the map.
map_events as (
    select
        me.stage_model,
        me.stage_index,
        me.channel,
        me.journey_id,
        me.customer_key,
        me.sentiment,
        me.revenue,
        me.moved_on,
        me.reached_purchase
    from int_map_events as me
),

owned_events as (
    select oe.stage_model, oe.stage_index, oe.channel, oe.touchpoint_owner
    from int_map_events as oe
    where oe.touchpoint_owner is not null
),

staged_customers as (
    select sc.stage_model, sc.stage_index, sc.customer_key from int_map_events as sc
),

journey_events as (
    select je.customer_key, je.revenue from int_journey_events as je
),

stages as (
    select sd.stage_model, sd.stage_index, sd.stage_name, sd.designed_channels, sd.owner, sd.purchase_stage_index
    from stage_definitions as sd
),

costs as (
    select
        unnest(cast($cost_channels as varchar[])) as channel,
        unnest(cast($cost_per_contact as double[])) as cost_per_contact
),

cells as (
    select
        me.stage_model,
        me.stage_index,
        me.channel,
        count(*) as events_in_cell,
        count(distinct me.journey_id) as journeys_in_cell,
        count(distinct me.customer_key) as customers_in_cell,
        -- Decimal sums are exact, so the mean does not depend on how threads split the rows.
        avg(me.sentiment::decimal(18, 6))::double as mean_sentiment,
        -- A sum of DECIMAL(18,2) is DECIMAL(38,2), which BI tools read as text or float: money stays (18,2).
        sum(me.revenue)::decimal(18, 2) as revenue,
        count(distinct me.customer_key) filter (where me.moved_on) as customers_moved_on,
        count(distinct me.journey_id) filter (where me.moved_on) as journeys_moved_on,
        count(distinct me.journey_id) filter (where me.reached_purchase) as journeys_purchased,
        bool_or(me.moved_on is not null) as has_next_stage,
        bool_or(me.reached_purchase is not null) as has_purchase_stage
    from map_events as me
    group by me.stage_model, me.stage_index, me.channel
),

owner_counts as (
    select oe.stage_model, oe.stage_index, oe.channel, oe.touchpoint_owner, count(*) as n_events
    from owned_events as oe
    group by oe.stage_model, oe.stage_index, oe.channel, oe.touchpoint_owner
),

-- Most frequent touchpoint owner of a cell's events (tie: the first by name).
cell_touchpoint_owners as (
    select
        oc.stage_model,
        oc.stage_index,
        oc.channel,
        first(oc.touchpoint_owner order by oc.n_events desc, oc.touchpoint_owner asc) as touchpoint_owner
    from owner_counts as oc
    group by oc.stage_model, oc.stage_index, oc.channel
),

-- Customers who reached a model's purchase stage, and the revenue of all their events.
purchasing_customers as (
    select distinct sc.stage_model, sc.customer_key
    from staged_customers as sc
    inner join stages as s on s.stage_model = sc.stage_model and s.stage_index = sc.stage_index
    where sc.stage_index = s.purchase_stage_index
),

customer_revenue as (
    -- Decimal sums and means are exact: a double mean would depend on how threads split the rows.
    select je.customer_key, coalesce(sum(je.revenue), 0) as revenue
    from journey_events as je
    group by je.customer_key
),

customer_values as (
    select
        pc.stage_model,
        coalesce($customer_value::double, avg(cr.revenue)::double) as avg_customer_value
    from purchasing_customers as pc
    inner join customer_revenue as cr on cr.customer_key = pc.customer_key
    group by pc.stage_model
),

priced as (
    select
        c.*,
        case when c.has_next_stage then c.customers_moved_on end as customers_moved_on_or_null,
        case when c.has_purchase_stage then c.journeys_purchased / c.journeys_in_cell end as p_purchase,
        coalesce(co.cost_per_contact, 0) as cost_per_contact
    from cells as c
    left join costs as co on co.channel = c.channel
),

final as (
    select
        p.stage_model,
        p.stage_index,
        s.stage_name,
        p.channel,
        p.events_in_cell,
        p.events_in_cell / sum(p.events_in_cell) over (
            partition by p.stage_model, p.stage_index
        ) as share_of_stage_events,
        p.journeys_in_cell,
        p.customers_in_cell,
        list_contains(s.designed_channels, p.channel) as is_designed_channel,
        p.mean_sentiment,
        p.revenue,
        p.customers_moved_on_or_null as customers_moved_on,
        p.customers_moved_on_or_null / p.customers_in_cell as flow_rate,
        case when p.has_next_stage then p.journeys_moved_on end as journeys_moved_on,
        case when p.has_purchase_stage then p.journeys_purchased end as journeys_purchased,
        p.p_purchase,
        -- Money is DECIMAL(18,2) (to the cent) in every published table; the rate per contact keeps
        -- fractions of a cent (an e-mail or SMS costs less than one).
        case
            when p.has_purchase_stage then coalesce($customer_value::double, cv.avg_customer_value, 0)
        end::decimal(18, 2) as avg_customer_value,
        p.cost_per_contact::decimal(18, 4) as cost_per_contact,
        (p.events_in_cell * p.cost_per_contact)::decimal(18, 2) as cost_to_serve,
        (
            p.customers_in_cell * p.p_purchase * coalesce($customer_value::double, cv.avg_customer_value, 0)
            - p.events_in_cell * p.cost_per_contact
        )::decimal(18, 2) as monetised_value,
        coalesce(s.owner, cto.touchpoint_owner) as owner
    from priced as p
    inner join stages as s on s.stage_model = p.stage_model and s.stage_index = p.stage_index
    left join customer_values as cv on cv.stage_model = p.stage_model
    left join cell_touchpoint_owners as cto
        on cto.stage_model = p.stage_model and cto.stage_index = p.stage_index and cto.channel = p.channel
)

select * from final
